"""The API's hardening for real: Ray Serve on 127.0.0.1 in front of a fleet, exercised over HTTP.

Host check (DNS rebinding), the token before the body, the body cap, which reads need the token, live
stream limits while control calls keep answering, security headers through Serve's proxy, and what
status and events show of an error (its first line, redacted)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid

import httpx
import pytest

from .conftest import make_cluster, wait_for

os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

TOKEN = "hardening-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/api/v1"
SECRET = "Zq9@pw-" + uuid.uuid4().hex[:8]
CRASH = (f"upstream http://bob:{SECRET}@10.0.0.9:3128/ refused the tunnel\n"
         f"  input_value={{'password': '{SECRET}'}}, input_type=dict\n  line three")


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster, _ = make_cluster(workers=[{"num_cpus": 2}])
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def api(cluster, tmp_path_factory):
    from ray import serve

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import free_port, wait_ready

    ns = f"hard-{uuid.uuid4().hex[:8]}"
    store = tmp_path_factory.mktemp("hard") / "store.db"
    fleet = FleetClient(start_supervisor(f"sqlite://{store}", namespace=ns, tick_s=0.05), ns)
    fleet.apply({"pools": [{"name": "web", "automation": "builtin.echo", "slots": 1,
                            "health": {"period_s": 0.2}, "recycle": {"drain_timeout_s": 2}}]})
    port = free_port()
    url = start_api(namespace=ns, port=port, token=TOKEN, status_ttl_s=0.2)
    wait_ready(url)
    with httpx.Client(base_url=url, timeout=30) as http:
        yield {"url": url, "port": port, "http": http, "fleet": fleet}
    stop_api(ns)
    serve.shutdown()
    with contextlib.suppress(Exception):
        fleet.down(timeout_s=5)


def test_a_foreign_host_header_is_refused_through_serve(api):
    http, port = api["http"], api["port"]
    for host in [f"rebound.evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"]:
        for path in [f"{API}/status", f"{API}/events", "/", f"{API}/health"]:
            r = http.get(path, headers={"Host": host, **AUTH})
            assert r.status_code == 421, (host, path, r.status_code)
            assert r.json()["error"]["code"] == "misdirected"
    for host in [f"127.0.0.1:{port}", f"localhost:{port}"]:
        assert http.get(f"{API}/status", headers={"Host": host}).status_code == 200


def test_the_token_comes_before_the_body_and_bodies_are_capped(api):
    http = api["http"]
    r = http.post(f"{API}/spec", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # was 422
    r = http.post(f"{API}/spec", content=b"{not json", headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 422
    big = json.dumps({"pools": [], "pad": "x" * (2 << 20)})
    r = http.post(f"{API}/spec", content=big, headers={"Content-Type": "application/json", **AUTH})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = http.post(f"{API}/spec", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 401  # no token: not even the size is looked at
    st = http.get(f"{API}/status").json()
    assert [p["name"] for p in st["pools"]] == ["web"]


def test_spec_events_and_errors_need_the_token_status_does_not(api):
    http = api["http"]
    for path in ["/spec", "/events", "/errors", "/events/stream"]:
        r = http.get(f"{API}{path}")
        assert r.status_code == 401, path
    for path in ["/spec", "/events", "/errors"]:
        assert http.get(f"{API}{path}", headers=AUTH).status_code == 200, path
    for path in ["/status", "/pools/web", "/nodes", "/streams", "/metrics/series", "/breakers", "/health"]:
        assert http.get(f"{API}{path}").status_code == 200, path


def test_security_headers_through_serve(api):
    http = api["http"]
    for path in ["/", "/static/app.js", f"{API}/status"]:
        h = http.get(path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"] and "default-src 'none'" in h[
            "content-security-policy"], path
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"


def test_live_streams_are_capped_per_client_and_control_still_answers(api):
    http, url = api["http"], api["url"]
    with contextlib.ExitStack() as stack:
        opened = []
        for _ in range(8):  # the per-client cap
            c = stack.enter_context(httpx.Client(base_url=url, timeout=30))
            r = stack.enter_context(c.stream("GET", f"{API}/events/stream", headers=AUTH, params={"timeout_s": 60}))
            assert r.status_code == 200
            opened.append(r)
        r = http.get(f"{API}/events/stream", headers=AUTH, params={"timeout_s": 5})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_streams"
        assert r.headers["retry-after"] == "5"
        # control routes still answer: each call fails with a timeout if it queues behind the streams
        assert http.get(f"{API}/status", timeout=15).status_code == 200
        r = http.post(f"{API}/pools/web/pause", headers=AUTH, timeout=15)
        assert r.status_code == 200 and r.json()["paused"] is True
        assert http.post(f"{API}/pools/web/resume", headers=AUTH, timeout=15).status_code == 200
    # closed streams give their places back (the replica notices the disconnect on its next poll)
    def reopened() -> bool:
        with http.stream("GET", f"{API}/events/stream", headers=AUTH, params={"timeout_s": 0.5}) as r:
            r.read()
            return r.status_code == 200

    wait_for(reopened, 30, 0.5)


def test_status_and_events_show_only_a_redacted_first_line_of_an_error(api):
    http, fleet = api["http"], api["fleet"]
    chaos = {"name": "chaos", "automation": "builtin.chaos", "slots": 1, "kind": "process",
             "config": {"crash_after_s": 0.3, "message": CRASH},
             "health": {"period_s": 0.2, "timeout_s": 5}, "recycle": {"drain_timeout_s": 1},
             "heal": {"backoff_base_s": 0.5, "backoff_max_s": 1}}
    r = http.post(f"{API}/spec", json={"pools": [{"name": "web", "automation": "builtin.echo", "slots": 1,
                                                  "health": {"period_s": 0.2}}, chaos]}, headers=AUTH)
    assert r.status_code == 200, r.text
    try:
        def crashed() -> list:
            events = http.get(f"{API}/events", params={"pool": "chaos", "limit": 500}, headers=AUTH).json()["events"]
            return [e for e in events if e["kind"] in ("slot.unhealthy", "slot.crashed", "automation.error")]

        found = wait_for(crashed, 90, 0.5)
        reasons: list[str] = []

        def unhealthy_reason() -> bool:
            st = http.get(f"{API}/status").json()
            pool = next(p for p in st["pools"] if p["name"] == "chaos")
            reasons.extend(s["reason"] for s in pool["slots"] if s["reason"])
            return any("refused the tunnel" in x for x in reasons)

        wait_for(unhealthy_reason, 60, 0.2)
        bodies = [http.get(f"{API}/status").text,
                  http.get(f"{API}/events", params={"limit": 5000}, headers=AUTH).text,
                  http.get(f"{API}/errors", headers=AUTH).text, json.dumps(found), json.dumps(reasons)]
        for body in bodies:
            assert SECRET not in body and "input_value" not in body and "line three" not in body
        shown = next(x for x in reasons if "refused the tunnel" in x)
        assert "http://***@10.0.0.9:3128/ refused the tunnel" in shown and "\n" not in shown
        messages = [e["message"] for e in found]
        assert messages and all("\n" not in m and len(m) <= 320 for m in messages), messages

        def crash_record():  # the full text stays in the crash record (redacted)
            return [c for c in fleet.crashes(pool="chaos") if "line three" in json.dumps(c)]

        records = wait_for(crash_record, 60, 0.5)
        assert SECRET not in json.dumps(records)
    finally:
        http.post(f"{API}/spec", json={"pools": [{"name": "web", "automation": "builtin.echo", "slots": 1,
                                                  "health": {"period_s": 0.2}}]}, headers=AUTH)
