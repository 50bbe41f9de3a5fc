"""The control-plane API for real: a Ray Serve app on 127.0.0.1 in front of a fleet on a multi-node
Ray cluster, exercised over HTTP (httpx), plus the CLI talking to it and Ray's metrics endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass

import httpx
import pytest
import ray

from .conftest import sigkill, wait_for

# Serve kills an HTTP proxy that isn't ready within 5 s, and serve.start() then fails; on a loaded shared
# machine a fresh worker process can take longer than that to start. Set before the module's cluster starts.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

TOKEN = "test-token-" + uuid.uuid4().hex
API = "/api/v1"


def echo_pool(name="web", slots=2, **extra):
    pool = {"name": name, "automation": "builtin.echo", "slots": slots, "health": {"period_s": 0.2, "timeout_s": 2},
            "recycle": {"drain_timeout_s": 2}}
    pool.update(extra)
    return pool


@dataclass
class Api:
    url: str
    namespace: str
    fleet: object  # FleetClient (for setup only; assertions go through HTTP)
    http: httpx.Client
    auth: dict
    store_url: str

    def get(self, path, token=TOKEN, **kw):
        """GET with the token (spec, events and errors always need it); ``token=None`` reads without."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.get(f"{API}{path}", headers={**headers, **kw.pop("headers", {})}, **kw)

    def post(self, path, token=TOKEN, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(f"{API}{path}", headers=headers, **kw)

    def status(self):
        r = self.get("/status")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, predicate, timeout_s=60, what="condition"):
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met within {timeout_s}s: {json.dumps(st)[:2000]}")
            time.sleep(0.2)


def pool_of(st, name):
    return next((p for p in st["pools"] if p["name"] == name), None)


def running(st, name, n):
    p = pool_of(st, name)
    return p is not None and p["counts"].get("running", 0) == n and len(p["slots"]) == n


@pytest.fixture(scope="module")
def api(cluster, tmp_path_factory):
    from ray import serve

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import free_port, wait_ready

    ns = f"api-{uuid.uuid4().hex[:8]}"
    store = tmp_path_factory.mktemp("api") / "store.db"
    sup = start_supervisor(f"sqlite://{store}", namespace=ns, tick_s=0.05)
    fleet = FleetClient(sup, ns)
    fleet.apply({"pools": [echo_pool("web", 2)]})
    url = start_api(namespace=ns, port=free_port(), token=TOKEN, status_ttl_s=0.2)
    assert url.startswith("http://127.0.0.1:")
    wait_ready(url)
    with httpx.Client(base_url=url, timeout=30) as http:
        a = Api(url, ns, fleet, http, {"Authorization": f"Bearer {TOKEN}"}, f"sqlite://{store}")
        a.wait(lambda st: running(st, "web", 2), 90, "web running")
        yield a
    stop_api(ns)
    serve.shutdown()
    try:
        fleet.down(timeout_s=5)
    except Exception:
        pass


def test_health_ready_and_openapi_document(api):
    assert api.get("/health").json() == {"status": "ok", "version": "0.1.0", "namespace": api.namespace}
    ready = api.get("/ready").json()
    assert ready["ready"] is True and ready["supervisor_pid"] > 0
    doc = api.http.get("/openapi.json").json()
    paths = set(doc["paths"])
    for p in ["status", "pools/{pool}", "slots/{slot_id}", "events", "events/stream", "errors", "streams", "nodes",
              "spec", "pools/{pool}/scale", "pools/{pool}/drain", "pools/{pool}/pause", "pools/{pool}/resume",
              "slots/{slot_id}/recycle", "health", "ready", "metrics/series"]:
        assert f"{API}/{p}" in paths, p
    schemas = doc["components"]["schemas"]
    for name in ["FleetStatus", "SlotStatus", "EventOut", "ErrorResponse", "NodeOut", "ErrorGroup", "StreamOut"]:
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["SlotStatus"]["properties"]["generation"]["description"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "text/event-stream" in doc["paths"][f"{API}/events/stream"]["get"]["responses"]["200"]["content"]


def test_status_pool_and_slot(api):
    st = api.status()
    web = pool_of(st, "web")
    assert web["desired"] == 2 and web["state"] == "ok" and web["automation"] == "builtin.echo"
    for s in web["slots"]:
        assert s["state"] == "running" and s["generation"] >= 1 and s["pid"] > 0 and s["node_id"]
        assert s["uptime_s"] is not None and s["actor"].startswith("fleet:web:")
    # gzip is served to clients that ask for it (httpx does), plain JSON to those that don't
    r = api.get("/status", headers={"Accept-Encoding": "identity"})
    assert r.headers.get("content-encoding") is None and r.json()["fleet"] == st["fleet"]
    assert api.get("/pools/web").json()["name"] == "web"
    slot = api.get("/slots/web:1").json()
    assert slot["id"] == "web:1" and slot["pool"] == "web" and slot["index"] == 1
    for path, what in [("/pools/nope", "pool"), ("/slots/web:99", "slot"), ("/slots/garbage", "slot")]:
        r = api.get(path)
        assert r.status_code == 404
        err = r.json()["error"]
        assert err["code"] == "not_found" and what in err["message"] and err["details"] == []
    r = api.http.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "path,body",
    [("/pools/web/scale", {"slots": 5}), ("/pools/web/drain", None), ("/pools/web/pause", None),
     ("/pools/web/resume", None), ("/slots/web:0/recycle", None), ("/spec", {"pools": []})],
)
def test_control_without_the_right_token_is_401_and_changes_nothing(api, path, body):
    before = api.status()
    for token in (None, "wrong-" + TOKEN, ""):
        r = api.post(path, token=token, json=body)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthorized"
        assert TOKEN not in r.text
    r = api.http.post(f"{API}{path}", headers={"Authorization": f"Basic {TOKEN}"}, json=body)
    assert r.status_code == 401
    time.sleep(0.3)  # give a wrongly accepted change time to show (status cache is 0.2 s)
    after = api.status()
    assert [(p["name"], p["desired"], p["paused"]) for p in after["pools"]] == [
        (p["name"], p["desired"], p["paused"]) for p in before["pools"]]
    assert {s["id"]: s["generation"] for s in pool_of(after, "web")["slots"]} == {
        s["id"]: s["generation"] for s in pool_of(before, "web")["slots"]}
    recycled = [e for e in after["events"] if e["kind"] == "slot.draining" and e["at"] > time.time() - 1]
    assert not recycled


def test_recycle_a_slot_bumps_its_generation(api):
    before = api.get("/slots/web:0").json()
    r = api.post("/slots/web:0/recycle")
    assert r.status_code == 200, r.text
    assert r.json() == {"slot": "web:0", "generation": before["generation"], "state": "running"}
    api.wait(lambda st: any(s["id"] == "web:0" and s["generation"] == before["generation"] + 1 and s["state"] == "running"
                            for s in pool_of(st, "web")["slots"]), 60, "web:0 replaced")
    assert api.get("/slots/web:0").json()["recycles"] == before["recycles"] + 1
    r = api.post("/slots/web:42/recycle")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_apply_bad_spec_is_422_naming_the_field_and_changes_nothing(api):
    spec_before = api.get("/spec").json()["spec"]
    gens_before = {s["id"]: s["generation"] for s in pool_of(api.status(), "web")["slots"]}
    cases = [
        ({"pools": [echo_pool("web", -1)]}, "pools.web.slots"),
        ({"pools": [echo_pool("web", 2, config={"no_such_option": 1})]}, "pools.web.config.no_such_option"),
        ({"pools": [echo_pool("web", 2), echo_pool("new", 1, automation="no.such.automation")]},
         "pools.new.automation"),
        ({"pools": [echo_pool("web", 2)], "surprise": True}, "surprise"),
    ]
    for spec, loc in cases:
        r = api.post("/spec", json=spec)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_spec"
        assert loc in [d["loc"] for d in err["details"]], err
    r = api.post("/spec", json=["not", "an", "object"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    time.sleep(0.3)
    assert api.get("/spec").json()["spec"] == spec_before
    st = api.status()
    assert [p["name"] for p in st["pools"]] == ["web"]
    assert {s["id"]: s["generation"] for s in pool_of(st, "web")["slots"]} == gens_before


def test_apply_scale_pause_drain_resume(api):
    r = api.post("/spec", json={"pools": [echo_pool("web", 2), echo_pool("side", 1)]})
    assert r.status_code == 200 and r.json() == {"added": ["side"], "removed": [], "changed": []}
    api.wait(lambda st: running(st, "side", 1), 60, "side running")
    r = api.post("/pools/side/scale", json={"slots": 2})
    assert r.status_code == 200 and r.json()["desired"] == 2
    api.wait(lambda st: running(st, "side", 2), 60, "side scaled to 2")
    r = api.post("/pools/side/scale", json={"slots": -3})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == "body.slots"
    assert api.post("/pools/nope/scale", json={"slots": 1}).status_code == 404
    r = api.post("/pools/side/pause")
    assert r.status_code == 200 and r.json()["paused"] is True and pool_of(api.status(), "side")["paused"]
    r = api.post("/pools/side/drain")
    assert r.status_code == 200 and r.json()["desired"] == 0 and "restores 2" in r.json()["message"]
    api.wait(lambda st: pool_of(st, "side")["slots"] == [], 60, "side drained")
    kinds = [e["kind"] for e in api.get("/events", params={"pool": "side"}).json()["events"]]
    assert "pool.drained" in kinds and "slot.removed" in kinds
    r = api.post("/pools/side/resume")
    assert r.status_code == 200 and r.json() == {"pool": "side", "desired": 2, "paused": False,
                                                  "message": "resumed with 2 slot(s)"}
    api.wait(lambda st: running(st, "side", 2), 60, "side resumed")
    r = api.post("/spec", json={"pools": [echo_pool("web", 2)]})
    assert r.status_code == 200 and r.json()["removed"] == ["side"]
    api.wait(lambda st: pool_of(st, "side") is None, 60, "side removed")


def test_events_filters_and_paging(api):
    everything = api.get("/events", params={"limit": 5000}).json()
    assert everything["source"] == "memory" and len(everything["events"]) >= 5
    ready = api.get("/events", params={"kind": "slot.ready", "pool": "web"}).json()["events"]
    assert ready and all(e["kind"] == "slot.ready" and e["pool"] == "web" for e in ready)
    one = api.get("/events", params={"slot": "web:1"}).json()["events"]
    assert one and {e["slot"] for e in one} == {"web:1"}
    slot_kinds = api.get("/events", params={"kind": "slot.*"}).json()["events"]
    assert slot_kinds and all(e["kind"].startswith("slot.") for e in slot_kinds)
    # time range reads the durable log; paging with the cursor walks it oldest first
    t0 = everything["events"][0]["at"]
    page1 = api.get("/events", params={"since": t0 - 3600, "limit": 2}).json()
    assert page1["source"] == "log" and len(page1["events"]) == 2
    page2 = api.get("/events", params={"after": page1["cursor"], "since": t0 - 3600, "limit": 2}).json()
    keys = [(e["physical"], e["counter"]) for e in page1["events"] + page2["events"]]
    assert keys == sorted(keys) and len({e["id"] for e in page1["events"] + page2["events"]}) == 4
    future = api.get("/events", params={"since": time.time() + 3600}).json()
    assert future["events"] == []
    r = api.get("/events", params={"after": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == "query.after"
    assert api.get("/events", params={"limit": 0}).status_code == 422


def test_sse_delivers_a_slot_event_within_a_deadline(api):
    got: list[dict] = []
    # the server ends the stream after timeout_s: a missing slot.ready fails the asserts below, never hangs
    with api.http.stream("GET", f"{API}/events/stream", params={"slot": "web:1", "timeout_s": 30},
                         headers=api.auth) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "retry: 3000"
        assert next(lines) == ": connected"
        assert api.post("/slots/web:1/recycle").status_code == 200
        for line in lines:
            if line.startswith("data:"):
                got.append(json.loads(line[5:]))
                if any(e["kind"] == "slot.ready" for e in got):
                    break
    assert got and all(e["slot"] == "web:1" for e in got)
    kinds = [e["kind"] for e in got]
    assert kinds[0] == "slot.draining" and "slot.recycled" in kinds and kinds[-1] == "slot.ready", kinds
    # a reconnect with Last-Event-ID resumes after that event: nothing old is replayed
    with api.http.stream("GET", f"{API}/events/stream", headers={"Last-Event-ID": got[0]["cursor"], **api.auth},
                         params={"slot": "web:1", "timeout_s": 2}) as r:
        replay = [json.loads(x[5:]) for x in r.iter_lines() if x.startswith("data:")]
    assert [e["id"] for e in replay] == [e["id"] for e in got[1:]]


def test_grouped_errors_after_a_slot_is_killed(api):
    st = api.wait(lambda st: running(st, "web", 2), 60, "web running")
    victim = pool_of(st, "web")["slots"][0]
    sigkill(victim["pid"])
    api.wait(lambda st: any(s["id"] == victim["id"] and s["generation"] > victim["generation"]
                            and s["state"] == "running" for s in pool_of(st, "web")["slots"]), 60, "healed")
    errs = api.get("/errors").json()
    died = [g for g in errs["groups"] if g["kind"] == "slot.died"]
    assert died and victim["id"] in died[0]["slots"] and died[0]["pools"] == ["web"] and died[0]["count"] >= 1
    assert "slot.died" in errs["source"]
    logged = api.get("/errors", params={"since": time.time() - 600, "pool": "web"}).json()
    assert any(g["kind"] == "slot.died" for g in logged["groups"])


def test_streams_and_nodes(api, cluster):
    assert api.get("/streams").json() == {"streams": []}
    nodes = api.get("/nodes").json()["nodes"]
    assert len(nodes) == 4 and sum(n["is_head"] for n in nodes) == 1 and all(n["alive"] for n in nodes)
    by_id = {n["node_id"]: n for n in nodes}
    us = by_id[cluster.worker_nodes_list[1].node_id]
    assert us["resources"]["browser"] == 4 and us["labels"] == {"region": "us"}
    assert by_id[cluster.worker_nodes_list[2].node_id]["resources"]["http"] == 8
    placed = sorted(s for n in nodes for s in n["slots"])
    assert placed == ["web:0", "web:1"]


def test_a_real_streams_depth_and_rates_and_events_until(api):
    source = {"name": "src", "automation": "builtin.numbers", "slots": 1, "config": {"count": 400, "every_s": 0.01},
              "health": {"period_s": 0.3, "timeout_s": 5}}
    before = time.time()
    assert api.post("/spec", json={"pools": [echo_pool("web", 2), source]}).status_code == 200
    try:
        seen: dict = {}

        def emitted_all() -> bool:  # the supervisor polls stream stats about once a second
            got = {x["name"]: x for x in api.get("/streams").json()["streams"]}.get("src.numbers")
            if got and got["in_rate"] > 0:
                seen.setdefault("rated", got)
            seen["got"] = got
            return bool(got and got["items_emitted"] == 400 and "rated" in seen)

        wait_for(emitted_all, 90, 0.5)
        got, rated = seen["got"], seen["rated"]
        assert got["depth"] == 400 and got["producers"] == ["src"] and got["out_rate"] == 0  # nobody reads it
        assert 0 < rated["in_rate"] <= 400 and rated["depth"] <= 400
        # events in a time range: since/until bound the durable log's answer
        applied = api.get("/events", params={"kind": "pool.applied", "since": before - 1}).json()["events"]
        assert any(e["pool"] == "src" for e in applied)
        cut = min(e["at"] for e in applied if e["pool"] == "src")
        earlier = api.get("/events", params={"kind": "pool.applied", "since": before - 1, "until": cut - 0.001}).json()
        assert earlier["events"] == [] or all(e["at"] < cut for e in earlier["events"])
        assert not any(e["pool"] == "src" for e in earlier["events"])
    finally:
        assert api.post("/spec", json={"pools": [echo_pool("web", 2)]}).status_code == 200
        api.wait(lambda st: pool_of(st, "src") is None, 60, "src removed")


def test_metric_history_and_ray_prometheus_export(api):
    def series():
        pools = api.get("/metrics/series").json()["pools"]
        return next((p["points"] for p in pools if p["pool"] == "web"), [])

    job = api.fleet.submit("web", list(range(300)))  # completion itself is the core's tests' business
    wait_for(lambda: any(p["tasks_per_s"] > 0 for p in series()), 30, 0.5)  # the throughput chart's data
    assert series()[-1]["running"] == 2
    head = next(n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    url = f"http://127.0.0.1:{head['MetricsExportPort']}/metrics"
    want = ("ray_fleet_slots", f'namespace="{api.namespace}"', 'pool="web"', 'state="running"')
    def scrape() -> str:
        return urllib.request.urlopen(url, timeout=10).read().decode()

    def slots_running() -> str | None:
        text = scrape()
        lines = [ln for ln in text.splitlines() if all(w in ln for w in want)]
        return text if lines and float(lines[0].rsplit(" ", 1)[1]) == 2.0 else None

    text = wait_for(slots_running, 120, 2)
    assert "ray_fleet_tasks_per_second" in text and "ray_fleet_reconcile_step_ms" in text

    def tasks_counted() -> bool:  # the processed items show up as tasks on Ray's metrics endpoint
        tasks = [ln for ln in scrape().splitlines() if ln.startswith("ray_fleet_tasks_total")
                 and f'namespace="{api.namespace}"' in ln and 'pool="web"' in ln]
        return bool(tasks and float(tasks[0].rsplit(" ", 1)[1]) >= 100)

    wait_for(tasks_counted, 120, 2)
    job.drop()


def test_campaign_breakers_listed_and_reset_with_the_token(api):
    from fleet_ray.campaign.config import BreakerConfig
    from fleet_ray.store import open_guardrails

    g = open_guardrails(api.store_url, api.namespace)
    cfg = BreakerConfig(min_samples=5, failure_rate=0.5)
    try:
        for _ in range(6):
            g.breaker_record("shop.example", False, cfg)
        g.breaker_record("ok.example", True, cfg)
    finally:
        g.close()
    listed = {b["target"]: b for b in api.get("/breakers").json()["breakers"]}
    assert listed["shop.example"]["tripped"] and "failures" in listed["shop.example"]["reason"]
    assert not listed["ok.example"]["tripped"]
    assert api.post("/breakers/shop.example/reset", token=None).status_code == 401
    assert api.get("/breakers").json()["breakers"][1]["tripped"]  # unchanged without the token
    r = api.post("/breakers/shop.example/reset")
    assert r.status_code == 200 and r.json()["tripped"] is True  # the state it had
    after = {b["target"]: b for b in api.get("/breakers").json()["breakers"]}
    assert not after.get("shop.example", {"tripped": False})["tripped"]
    since = time.time() - 60
    resets = api.get("/events", params={"kind": "campaign.breaker.reset", "since": since}).json()["events"]
    assert resets and resets[-1]["data"]["target"] == "shop.example" and resets[-1]["origin"] == "operator:api"


def test_no_secrets_in_responses(api):
    cfg = {"tag": "redis://admin:hunter2@10.0.0.1:6379/0 "}
    r = api.post("/spec", json={"pools": [echo_pool("web", 2, config=cfg)]})
    assert r.status_code == 200, r.text
    spec = api.get("/spec").json()
    assert "hunter2" not in json.dumps(spec) and "redis://***@10.0.0.1" in spec["spec"]["pools"][0]["config"]["tag"]
    bodies = [api.get(p).text for p in ["/status", "/events", "/errors", "/nodes", "/spec", "/pools/web"]]
    bodies.append(api.post("/pools/nope/scale", json={"slots": 1}).text)
    for b in bodies:
        assert TOKEN not in b and "hunter2" not in b
    api.post("/spec", json={"pools": [echo_pool("web", 2)]})


def test_read_endpoints_can_be_locked(api):
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import wait_ready

    url = start_api(namespace=api.namespace, port=httpx.URL(api.url).port, token=TOKEN, read_auth=True,
                    route_prefix="/locked", name=f"locked-{api.namespace}")
    try:
        assert url.endswith("/locked")
        wait_ready(url)
        assert httpx.get(f"{url}{API}/status").status_code == 401
        assert httpx.get(f"{url}{API}/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = httpx.get(f"{url}{API}/status", headers=api.auth)
        assert r.status_code == 200 and pool_of(r.json(), "web")
        assert httpx.get(f"{url}{API}/health").status_code == 200  # liveness stays open
        assert httpx.get(f"{url}/").status_code == 200  # the page itself holds no data
    finally:
        stop_api(name=f"locked-{api.namespace}")


def test_cli_talks_to_the_api(api):
    env = {**os.environ, "FLEET_API_URL": api.url, "FLEET_API_TOKEN": TOKEN}

    def cli(*args, check=True):
        p = subprocess.run([sys.executable, "-m", "fleet_ray.cli.main", *args], env=env, capture_output=True, text=True,
                           timeout=120)
        assert not check or p.returncode == 0, p.stderr
        return p

    table = cli("status").stdout
    assert "pool web" in table and "web:0" in table and "GEN" in table
    as_json = json.loads(cli("status", "--json").stdout)
    assert pool_of(as_json, "web")["desired"] == 2
    gen = api.get("/slots/web:1").json()["generation"]
    assert "will be recycled" in cli("recycle", "web:1").stdout
    api.wait(lambda st: any(s["id"] == "web:1" and s["generation"] == gen + 1 for s in pool_of(st, "web")["slots"]),
             60, "web:1 recycled via CLI")
    events = cli("events", "--slot", "web:1", "--json").stdout.splitlines()
    assert any(json.loads(x)["kind"] == "slot.recycled" for x in events)
    followed = cli("events", "--follow", "--backlog", "5", "--timeout", "3").stdout
    assert followed.count("\n") >= 5
    bad = cli("scale", "nope", "3", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr
    denied = subprocess.run([sys.executable, "-m", "fleet_ray.cli.main", "scale", "web", "3"], capture_output=True,
                            text=True, timeout=120, env={**env, "FLEET_API_TOKEN": "wrong"})
    assert denied.returncode != 0 and "token" in denied.stderr
    assert pool_of(api.status(), "web")["desired"] == 2


def test_cli_apply_and_drain_through_the_api_with_a_token_file(api, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if k != "FLEET_API_TOKEN"}
    env.update(FLEET_API_URL=api.url, FLEET_API_TOKEN_FILE=str(token_file))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fleet_ray.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"pools": [echo_pool("web", 2), echo_pool("cli", 1)]}))
    out = cli("apply", str(spec))
    assert out.returncode == 0, out.stderr
    api.wait(lambda st: running(st, "cli", 1), 60, "cli pool running")
    out = cli("drain", "cli")
    assert out.returncode == 0, out.stderr
    api.wait(lambda st: pool_of(st, "cli") is not None and pool_of(st, "cli")["slots"] == [], 60, "cli drained")
    spec.write_text(json.dumps({"pools": [echo_pool("web", 2)]}))
    assert cli("apply", str(spec)).returncode == 0
    api.wait(lambda st: pool_of(st, "cli") is None, 60, "cli pool removed")
    token_file.write_text("wrong\n")
    refused = cli("drain", "web")
    assert refused.returncode != 0 and "token" in refused.stderr
    assert pool_of(api.status(), "web")["desired"] == 2


def test_openapi_fuzzing_finds_no_server_errors(api, tmp_path):
    """schemathesis generates requests from the OpenAPI document; none may get a 5xx. It runs against a
    fleet of its own (a second supervisor and API in the same Serve), so with the token every endpoint
    runs, applying specs included. Without a token every request that needs one must be refused (401)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.guard import access
    from fleet_ray.serve.testing import wait_ready

    ns = f"fuzz-{uuid.uuid4().hex[:6]}"
    fleet = FleetClient(start_supervisor(f"sqlite://{tmp_path}/store.db", namespace=ns, tick_s=0.05), ns)
    fleet.apply({"pools": [echo_pool("web", 1)]})
    url = start_api(namespace=ns, port=httpx.URL(api.url).port, token=TOKEN, route_prefix=f"/{ns}", name=ns,
                    status_ttl_s=0.2)
    started = time.monotonic()
    try:
        wait_ready(url)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures: list[str] = []
        calls: list[str] = []

        def run(op_filter, headers):
            for result in schema.include(**op_filter).exclude(path_regex="events/stream").get_all_operations():
                op = result.ok()

                @settings(max_examples=25, deadline=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck), derandomize=True)
                @given(case=op.as_strategy())
                def check(case):
                    r = case.call(base_url=url, headers=headers, timeout=30)
                    calls.append(f"{bool(headers)} {case.method} {case.formatted_path} {r.status_code}")
                    if r.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} -> {r.status_code}: {r.text[:300]}")
                    elif not headers and access(case.method, case.formatted_path, False) == "token":
                        assert r.status_code == 401, (case.method, case.formatted_path, r.status_code)
                    assert TOKEN not in r.text

                check()

        run({"method": "GET"}, {})
        run({"method": "POST"}, {})
        run({"method": "GET"}, api.auth)
        run({"method": "POST"}, api.auth)
        took = time.monotonic() - started
        assert not failures, failures
        with_token = [c for c in calls if c.startswith("True")]
        assert len(calls) >= 600 and len(with_token) >= 300, len(calls)
        assert {c.split()[-1] for c in with_token} >= {"200", "404", "422"}, with_token
        assert {c.split()[-1] for c in calls if c.startswith("False")} >= {"200", "401"}
        print(f"schemathesis: {len(calls)} requests ({len(with_token)} with the token), 0 server errors, "
              f"{took:.0f} s")
    finally:
        stop_api(name=ns)
        try:
            fleet.down(timeout_s=5)
        except Exception:
            pass
    st = api.status()  # the module's fleet was never touched
    assert [p["name"] for p in st["pools"]] == ["web"] and pool_of(st, "web")["desired"] == 2


def test_cli_up_starts_supervisor_and_api_and_down_removes_them(api, cluster, tmp_path):
    """`fleet-ray up` against an existing cluster: supervisor + API for a new namespace; Serve already runs
    here, so the API joins it (same address). `down` removes the fleet and its API."""
    ns = f"up-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "FLEET_API_TOKEN": TOKEN, "FLEET_STORE_URL": f"sqlite://{tmp_path}/store.db"}
    env.pop("FLEET_API_URL", None)
    base = [sys.executable, "-m", "fleet_ray.cli.main", "--address", cluster.address, "--namespace", ns]
    port = str(httpx.URL(api.url).port)
    up = subprocess.run([*base, "up", "--api-port", port], env=env, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    url = f"http://127.0.0.1:{port}/{ns}"
    assert f"API and dashboard on {url}/" in up.stdout and "FLEET_API_TOKEN" in up.stdout
    assert TOKEN not in up.stdout + up.stderr
    from fleet_ray.serve.testing import wait_ready

    wait_ready(url)
    assert httpx.get(f"{url}{API}/status").json()["namespace"] == ns
    assert httpx.get(f"{url}/").status_code == 200
    assert api.get("/health").json()["namespace"] == api.namespace  # the first API is untouched
    # with no --api-url the CLI finds this fleet's API at the default address (port from the env)
    st = subprocess.run([*base, "status", "--json"], env={**env, "FLEET_API_PORT": port}, capture_output=True,
                        text=True, timeout=120)
    assert st.returncode == 0 and json.loads(st.stdout)["namespace"] == ns, st.stderr
    down = subprocess.run([*base, "--no-api", "down", "--timeout", "5"], env=env, capture_output=True, text=True,
                          timeout=180)
    assert down.returncode == 0, down.stderr
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == ns]
    assert "fleet:supervisor" not in names
    # the API of the fleet that went down stops answering for it
    wait_for(lambda: httpx.get(f"{url}{API}/health").status_code == 404, 30, 0.5)
