"""Guardrails enforced cluster-wide: members on two Ray nodes against one loopback HTTP target that
logs every request, with the shared state in a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import ray.cloudpickle
import redis

from fleet_ray.campaign import Campaign, SigningKey, breaker_status
from fleet_ray.campaign.ratelimit import max_in_window

from .conftest import REDIS_URL, make_cluster, wait_for

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tasks defined here run on workers

WORKERS = [{"num_cpus": 1, "resources": {"camp": 4}}, {"num_cpus": 1, "resources": {"camp": 4}}]


class HttpTarget:
    """A loopback HTTP server that logs (time, path) of every request. ``/fail…`` answers 500."""

    def __init__(self):
        self.log: list[tuple[float, str]] = []
        lock = threading.Lock()
        log = self.log

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with lock:
                    log.append((time.time(), self.path))
                status, body = (500, b"down") if self.path.startswith("/fail") else (200, b"ok")
                if self.path.startswith("/limited"):
                    status, body = 429, b"slow down"
                if self.path == "/robots.txt":
                    body = b"User-agent: *\nDisallow: /private\n"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def paths(self) -> list[str]:
        return [p for _, p in list(self.log)]

    def hits(self, prefix: str) -> list[float]:
        return [t for t, p in list(self.log) if p.startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForwardProxy:
    """A loopback HTTP forward proxy with Basic proxy auth; logs the URLs it forwarded."""

    def __init__(self, user: str, password: str):
        import base64
        import urllib.error
        import urllib.request

        self.seen: list[str] = []
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        seen = self.seen
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the target

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.headers.get("Proxy-Authorization") != expected:
                    self.send_response(407)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                seen.append(self.path)
                try:
                    with opener.open(self.path, timeout=10) as up:
                        status, body = up.status, up.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{user}:{password}@127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_cluster():
    return make_cluster(WORKERS, head_cpus=1)[0]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    cluster = start_cluster()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ns(redis_url):
    name = f"t-camp-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=f"fleet:{name}:*", count=1000):
        r.delete(k)


@pytest.fixture
def target():
    t = HttpTarget()
    yield t
    t.close()


def fetch_status(ctx, url):
    return ctx.fetch(url).status_code, ctx.node


def test_default_rate_limit_holds_across_members_on_two_nodes(ray_cluster, ns, target):
    urls = [f"{target.url}/page/{i}" for i in range(12)]
    with Campaign(6, store_url=REDIS_URL, namespace=ns, signing_key=SigningKey.generate(), active_concurrency=6,
                  placement={"resources": {"camp": 1}}) as c:  # default: 2 requests/s per target
        res = c.map_targets(fetch_status, urls)
        sent = [e.data["receipt"]["payload"]["sent_at"] for e in c.events.query(kind="campaign.request")]
    assert all(r.ok and r.value[0] == 200 for r in res)
    assert len(sent) == 12 and max_in_window(sent, 1.0) <= 2  # what the limiter controls: send times
    assert len({r.value[1] for r in res}) == 2  # the members sending them sat on both nodes
    arrivals = target.hits("/page/")
    assert len(arrivals) == 12
    # at the target: never more than 2 in any window (5% tolerance on the window for loopback jitter)
    assert max_in_window(arrivals, 0.95) <= 2
    assert max_in_window(arrivals, 1.0) <= 3
    span = max(arrivals) - min(arrivals)
    assert (len(arrivals) - 1) / span <= 2 * 1.05


def test_faster_configured_rate_is_shared_not_multiplied_by_members(ray_cluster, ns, target):
    urls = [f"{target.url}/fast/{i}" for i in range(40)]
    with Campaign(8, store_url=REDIS_URL, namespace=ns, signing_key=SigningKey.generate(), active_concurrency=8,
                  rate_limit={"per_target_rps": 10}, placement={"resources": {"camp": 1}}) as c:
        res = c.map_targets(fetch_status, urls)
        sent = [e.data["receipt"]["payload"]["sent_at"] for e in c.events.query(kind="campaign.request")]
    assert all(r.ok for r in res) and len({r.value[1] for r in res}) == 2
    assert len(sent) == 40 and max_in_window(sent, 1.0) <= 10
    arrivals = target.hits("/fast/")
    assert max_in_window(arrivals, 0.95) <= 10
    assert max_in_window(arrivals, 1.0) <= 11


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet_ray.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_breaker_trips_at_threshold_refuses_stays_tripped_and_resets_only_by_operator(ray_cluster, ns, target):
    trips = []
    with Campaign(1, store_url=REDIS_URL, namespace=ns, signing_key=SigningKey.generate(), notifier=trips.append,
                  rate_limit={"per_target_rps": 100}, breaker={"window_s": 8},
                  placement={"resources": {"camp": 1}}) as c:
        ok_urls = [f"{target.url}/ok/{i}" for i in range(18)]
        res = c.map_targets(fetch_status, ok_urls + [f"{target.url}/fail/1", f"{target.url}/fail/2"])
        assert [r.value[0] for r in res] == [200] * 18 + [500, 500]
        (state,) = breaker_status(REDIS_URL, ns)
        assert (state.samples, state.failures, state.tripped) == (20, 2, False)  # 10% is not over 10%
        assert not trips

        res = c.map_targets(fetch_status, [f"{target.url}/fail/3"])  # 3/21 > 10% with >= 20 samples
        assert res[0].ok and res[0].value[0] == 500
        assert len(trips) == 1 and (trips[0].target, trips[0].samples, trips[0].failures) == ("127.0.0.1", 21, 3)
        assert len(c.events.query(kind="campaign.breaker.tripped")) == 2  # the member's event + the receipt
        assert c.status().circuit_tripped

        sent = len(target.log)
        refused = c.map_targets(fetch_status, [f"{target.url}/ok/x{i}" for i in range(3)])
        assert [r.error_type for r in refused] == ["CircuitOpen"] * 3
        assert len(target.log) == sent  # nothing reached the target

        # let the whole 8 s window expire: the breaker must not heal
        wait_for(lambda: not c.status().breakers[0].samples, 60)
        assert c.status().breakers[0].tripped and breaker_status(REDIS_URL, ns)[0].tripped
        assert c.map_targets(fetch_status, [f"{target.url}/ok/y"])[0].error_type == "CircuitOpen"

        status = cli("--namespace", ns, "breaker", "status", "--store", REDIS_URL, "--json")
        assert status.returncode == 0 and json.loads(status.stdout)[0]["tripped"] is True
        reset = cli("--namespace", ns, "breaker", "reset", "127.0.0.1", "--store", REDIS_URL, "--operator", "tester")
        assert reset.returncode == 0 and "was tripped" in reset.stdout

        again = c.map_targets(fetch_status, [f"{target.url}/ok/z"])
        assert again[0].ok and again[0].value[0] == 200
        resets = c.events.query(kind="campaign.breaker.reset")
        assert len(resets) == 1 and resets[0].data["operator"] == "tester"
        assert not c.status().circuit_tripped


def test_policy_hook_denies_a_target_on_every_node(ray_cluster, ns, target):
    from fleet_ray.campaign import deny_targets

    with Campaign(4, store_url=REDIS_URL, namespace=ns, signing_key=SigningKey.generate(),
                  policy=deny_targets("127.0.0.1", reason="NO_LOCALHOST"), placement={"resources": {"camp": 1}}) as c:
        res = c.broadcast(lambda ctx, url: ctx.fetch(url).status_code, f"{target.url}/denied")
    assert all(r.error_type == "PolicyDenied" and "NO_LOCALHOST" in r.error for r in res)
    assert not target.log


def test_members_go_through_their_proxies_and_secrets_stay_out_of_status_and_receipts(ray_cluster, ns, target):
    proxies = [ForwardProxy("alice", "pa55-one"), ForwardProxy("bob", "pa55-two")]
    try:
        with Campaign(2, store_url=REDIS_URL, namespace=ns, signing_key=SigningKey.generate(),
                      proxies=[p.url for p in proxies], proxy_max_failures=1, rate_limit={"per_target_rps": 50},
                      placement={"resources": {"camp": 1}}) as c:
            res = c.plan(lambda i, _: {"target": f"{target.url}/via/{i}"}, lambda ctx, item: ctx.fetch(item["target"]).text)
            assert [r.value for r in res] == ["ok", "ok"]
            assert [len(p.seen) for p in proxies] == [1, 1]  # each member through its own proxy
            assert sorted(target.paths) == ["/via/0", "/via/1"]
            hit = c.plan(lambda i, _: {"target": f"{target.url}/limited/{i}"},
                         lambda ctx, item: ctx.fetch(item["target"]).status_code)
            assert [r.value for r in hit] == [429, 429]
            health = c.status().proxies
            assert [h.reputation_demerits for h in health] == [1, 1] and not any(h.healthy for h in health)
            dump = c.status().model_dump_json() + json.dumps([e.data for e in c.events.query()])
        assert "pa55" not in dump and "alice" not in dump and "127.0.0.1" in dump
    finally:
        for p in proxies:
            p.close()
