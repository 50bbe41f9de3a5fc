"""No secret leaks anywhere a person or another local user can look.

A fleet runs with a known proxy password (a browser pool whose proxy needs it, and one with a wrong
one), a known API token and a known Redis password (a private ``redis-server --requirepass`` as the
store). It is driven through failures (a refused proxy, items that fail), crashes (``builtin.chaos``
raising errors that quote a credentialed URL and a Pydantic-style ``input_value`` echo, a SIGKILLed
slot), the HTTP API (every read with the token, control calls, refused calls) and the dashboard in real
Chromium. Then every log (the Ray session's log directory, this process's log records), event, crash
record, API response, artifact (screenshots, traces, console logs; zip members too), Ray's records of
failed tasks and ``ray list actors --detail`` is searched for the secrets: 0 hits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from .conftest import sigkill, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(900)]
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

PROXY_PW = "Px7-" + uuid.uuid4().hex[:12]
WRONG_PW = "Wx7-" + uuid.uuid4().hex[:12]
TOKEN = "Tk7-" + uuid.uuid4().hex
REDIS_PW = "Rd7-" + uuid.uuid4().hex[:12]
SECRETS = {"proxy password": PROXY_PW, "wrong proxy password": WRONG_PW, "API token": TOKEN,
           "Redis password": REDIS_PW}
API = "/api/v1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-gpu", "--no-first-run", "--disable-quic"]
PAGE = b"<html><head><title>Leak %s</title></head><body>ok</body></html>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_store(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server must be installed for this test")
    port, where = _free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PW,
                             "--save", "", "--appendonly", "no", "--dir", str(where)], stdout=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 10, 0.05)
    # as on a real host: the password in a private file that FLEET_STORE_PASSWORD_FILE names, set before
    # the cluster starts so every Ray worker has it; the URL the fleet passes around names the server only
    secret = where / "store.password"
    secret.write_text(REDIS_PW + "\n")
    secret.chmod(0o600)
    previous = os.environ.get("FLEET_STORE_PASSWORD_FILE")
    os.environ["FLEET_STORE_PASSWORD_FILE"] = str(secret)
    yield f"redis://127.0.0.1:{port}/0"
    if previous is None:
        os.environ.pop("FLEET_STORE_PASSWORD_FILE", None)
    else:
        os.environ["FLEET_STORE_PASSWORD_FILE"] = previous
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def cluster(redis_store):
    """Head and one browser node; the head runs Ray's dashboard (the state API behind `ray list actors`)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    cluster.worker_nodes_list = [cluster.add_node(num_cpus=2, resources={"browser": 2})]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="fleet-tests", logging_level="WARNING", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def browser_pool(name: str, proxy: dict, logs: Path) -> dict:
    return {"name": name, "automation": "browser.page-info", "kind": "browser", "slots": 1, "concurrency": 1,
            "placement": {"resources": {"browser": 1}},
            "health": {"period_s": 0.5, "timeout_s": 20, "failure_threshold": 5, "start_timeout_s": 240},
            "browser": {"proxies": [proxy], "max_attempts": 2,
                        "artifacts": {"logs_root": str(logs), "trace": "always"}}}


def chaos_pool(name: str, proxy_url: str, **config) -> dict:
    credentialed = proxy_url.replace("http://", f"http://alice:{PROXY_PW}@")
    message = (f"upstream {credentialed}/ refused: 407\n"
               f"  input_value={{'username': 'alice', 'password': '{PROXY_PW}'}}, input_type=dict\n"
               f"  redis at redis://:{REDIS_PW}@127.0.0.1:1/0; hook https://api.test/h?token={TOKEN} failed\n"
               f"  sent Authorization: Bearer {TOKEN}")
    return {"name": name, "automation": "builtin.chaos", "slots": 1, "config": {"message": message, **config},
            "health": {"period_s": 0.2, "timeout_s": 5}, "recycle": {"drain_timeout_s": 1},
            "heal": {"backoff_base_s": 0.5, "backoff_max_s": 2}}


def hits(text: str | bytes, where: str) -> list[str]:
    data = text.encode(errors="replace") if isinstance(text, str) else text
    found = []
    for what, secret in SECRETS.items():
        at = data.find(secret.encode())
        if at >= 0:
            context = data[max(0, at - 120): at + 60].decode(errors="replace")
            found.append(f"{what} in {where}: ...{context}...")
    return found


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def scan_file(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    found = hits(data, str(path))
    if path.suffix == ".zip" or data[:2] == b"PK":
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as z:
            for member in z.namelist():
                found += hits(z.read(member), f"{path}!{member}")
    return found


def drive_dashboard(url: str, shots: Path) -> list[str]:
    from playwright.sync_api import expect, sync_playwright

    texts = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("dialog", lambda d: d.accept(TOKEN if "token" in d.message.lower() else "1"))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(f"{url}/")
            expect(page.locator("tr[data-slot]").first).to_be_visible(timeout=60_000)
            page.locator("#token-btn").click()
            expect(page.locator("#events li").first).to_be_visible(timeout=30_000)
            page.click("button[data-action=load-spec]")
            expect(page.locator("#spec-text")).not_to_have_value("", timeout=15_000)
            texts.append(page.locator("#spec-text").input_value())
            page.fill("#spec-text", '{"pools": [{"name": "x", "automation": "builtin.echo", "slots": -1}]}')
            page.click("button[data-action=apply]")
            expect(page.locator("#apply-result")).to_contain_text("pools.x.slots", timeout=15_000)
            time.sleep(4)  # a round of the slow panes (errors, nodes, streams, breakers)
            texts.append(page.content())
            texts.append("\n".join(console))
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    return texts


def test_no_secret_reaches_logs_events_crashes_api_artifacts_or_ray_state(cluster, redis_store, tmp_path, caplog):
    import ray
    from ray import serve
    from ray.util.state import list_actors, list_tasks

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.browser.loopback import AuthProxy, SiteServer
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.observe.events import EventLog
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import free_port, wait_ready
    from fleet_ray.store import open_store

    caplog.set_level(logging.DEBUG)
    ns = f"leak-{uuid.uuid4().hex[:6]}"
    logs = tmp_path / "artifacts"
    seen: list[tuple[str, str]] = []  # (where, text) of everything shown
    with SiteServer(handler=lambda path, _h: (200, "text/html", PAGE % path.encode())) as site, \
            AuthProxy("alice", PROXY_PW, hosts={"shop.test": ("127.0.0.1", site.port)}) as proxy:
        good = {"url": proxy.url, "username": "alice", "password": PROXY_PW, "country": "DE"}
        bad = {"url": proxy.url, "username": "alice", "password": WRONG_PW}
        fleet = FleetClient(start_supervisor(redis_store, namespace=ns, tick_s=0.05), ns)
        api_url = start_api(namespace=ns, port=free_port(), token=TOKEN, status_ttl_s=0.2)
        try:
            wait_ready(api_url)
            http = httpx.Client(base_url=api_url, timeout=60)
            spec = {"pools": [browser_pool("good", good, logs), browser_pool("bad", bad, logs),
                              chaos_pool("crashy", proxy.url, crash_after_s=0.5),
                              chaos_pool("nostart", proxy.url, fail_setup=True),
                              {"name": "web", "automation": "builtin.echo", "slots": 1,
                               "health": {"period_s": 0.3}, "recycle": {"drain_timeout_s": 1}}]}
            r = http.post(f"{API}/spec", json=spec, headers=AUTH)
            assert r.status_code == 200, r.text
            seen.append(("POST /spec", r.text))

            def browsers_up() -> bool:
                st = http.get(f"{API}/status").json()
                return all(s["state"] == "running" for p in st["pools"] if p["name"] in ("good", "bad", "web")
                           for s in p["slots"]) and len(st["pools"]) == 5
            wait_for(browsers_up, 300, 1)

            # failures: a refused proxy, items through the good one, items that fail
            ok = fleet.submit("good", ["http://shop.test/one", "http://shop.test/two"]).wait(timeout_s=300)
            failed = fleet.submit("bad", ["http://shop.test/three"]).wait(timeout_s=300)
            assert all(x.ok for x in ok) and not failed[0].ok
            seen.append(("item results", json.dumps([x.model_dump() for x in ok + failed], default=str)))
            # crashes: chaos raises every 0.5 s; one slot is SIGKILLed
            wait_for(lambda: len(fleet.crashes(pool="crashy")) >= 2, 120, 0.5)
            web = http.get(f"{API}/slots/web:0").json()
            sigkill(web["pid"])
            wait_for(lambda: http.get(f"{API}/slots/web:0").json()["generation"] > web["generation"], 120, 0.5)

            # the API: every read with the token, control calls, refused calls
            for path in ["/status", "/pools/good", "/pools/crashy", "/slots/crashy:0", "/slots/bad:0", "/spec",
                         "/events?limit=5000", "/events?since=0&limit=5000", "/errors", "/errors?since=0",
                         "/streams", "/nodes", "/metrics/series", "/breakers", "/health", "/ready"]:
                r = http.get(f"{API}{path}", headers=AUTH)
                assert r.status_code == 200, (path, r.text)
                seen.append((f"GET {path}", r.text))
            with http.stream("GET", f"{API}/events/stream", headers=AUTH, params={"backlog": 500, "timeout_s": 2}) as r:
                seen.append(("SSE", r.read().decode()))
            for method, path, body, headers in [
                ("POST", "/pools/web/scale", {"slots": 2}, AUTH), ("POST", "/slots/web:0/recycle", None, AUTH),
                ("POST", "/spec", {"pools": [{"name": "web", "automation": "builtin.echo", "slots": -1,
                                               "config": {"tag": f"http://u:{PROXY_PW}@h:1"}}]}, AUTH),
                ("POST", "/spec", {"pools": [{**browser_pool("good", {**good, "url": "ftp://x"}, logs)}]}, AUTH),
                ("POST", "/pools/web/scale", {"slots": 1}, {"Authorization": "Bearer wrong"}),
                ("POST", "/pools/web/scale", {"slots": 1}, {"Authorization": f"Basic {TOKEN}"}),
                ("GET", "/spec", None, {}), ("GET", "/status", None, {"Host": "evil.example", **AUTH}),
            ]:
                r = http.request(method, f"{API}{path}", json=body, headers=headers)
                assert r.status_code < 500, (path, r.text)
                seen.append((f"{method} {path} -> {r.status_code}", r.text + json.dumps(dict(r.headers))))
            seen += [(f"dashboard {i}", t) for i, t in enumerate(drive_dashboard(api_url, tmp_path))]

            # the fleet's own records
            seen.append(("events (memory)", json.dumps(fleet.events(limit=10_000), default=str)))
            store = open_store(redis_store, ns)
            try:
                logged = EventLog(store).query()
                seen.append(("event log", json.dumps([e.model_dump(mode="json") for e in logged])))
            finally:
                store.close()
            seen.append(("crash records", json.dumps(fleet.crashes(limit=10_000), default=str)))
            seen.append(("status", fleet.status().model_dump_json()))
            state_api = f"http://{cluster.head_node.address_info['webui_url']}"
            actors = list_actors(address=state_api, detail=True, limit=10_000, raise_on_missing_output=False)
            seen.append(("list_actors(detail=True)", json.dumps(
                [a if isinstance(a, dict) else dataclasses.asdict(a) for a in actors], default=str)))
            failed_tasks = list_tasks(address=state_api, detail=True, limit=10_000, raise_on_missing_output=False,
                                      filters=[("state", "=", "FAILED")])
            seen.append(("list_tasks(detail=True), failed", json.dumps(
                [t if isinstance(t, dict) else dataclasses.asdict(t) for t in failed_tasks], default=str)))
            cli = subprocess.run(["ray", "list", "actors", "--detail", "--limit", "10000", "--address", state_api],
                                 capture_output=True, text=True, timeout=120)
            seen.append(("ray list actors --detail", cli.stdout + cli.stderr))
            assert cli.returncode == 0 and ns in cli.stdout, cli.stderr[-2000:]
        finally:
            with contextlib.suppress(Exception):
                stop_api(ns)
            with contextlib.suppress(Exception):
                serve.shutdown()
            with contextlib.suppress(Exception):
                fleet.down(timeout_s=10)
    time.sleep(2)  # let the workers flush their logs

    found: list[str] = []
    for where, text in seen:
        found += hits(text, where)
    found += hits("\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records), "caplog")
    artifacts = files_under(logs) + [tmp_path / "dashboard.png"]
    assert any(p.suffix == ".zip" for p in artifacts), "a trace should have been kept for the failed item"
    for path in artifacts:
        found += scan_file(path)
    session_dirs = {Path(ray._private.worker._global_node.get_session_dir_path())}
    session_dirs |= {Path(n.get_session_dir_path()) for n in [cluster.head_node, *cluster.worker_nodes_list]}
    log_files = [p for d in session_dirs for p in files_under(d / "logs")]
    assert log_files, session_dirs
    for path in log_files:
        found += scan_file(path)
    print(f"leak scan: {len(seen)} responses/records, {len(caplog.records)} log records, {len(artifacts)} "
          f"artifacts, {len(log_files)} Ray log files; {len(found)} hits")
    assert not found, "\n".join(found[:40])
