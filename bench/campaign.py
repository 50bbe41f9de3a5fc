"""Benchmark: campaign dispatch overhead and the cluster-wide rate limiter.

    python -m bench.campaign [--members 1000] [--active N] [--rate 20] [--store redis://127.0.0.1:6379/15]

On one Ray cluster (head + 2 worker nodes, ``ray.cluster_utils.Cluster``):

1. 1,000 members × a no-op task through ``Campaign.broadcast`` (members on worker actors across the
   nodes, guardrail pre-checks, receipts to the durable log) vs the same 1,000 no-ops as plain Ray
   tasks (``f.remote()`` then ``ray.get``), each warmed up first, in the same run → ``ratio``
   (members/s over tasks/s), with audit signing on (``ratio``; receipts also go to an NDJSON sink)
   and off (``ratio_signing_off``), all members in flight like the plain tasks; and at the
   campaign's default ``active_concurrency`` of 50 (``ratio_active50``);
2. the limiter: members on 2 nodes hammer one loopback HTTP target through ``map_targets``. The most
   requests in any 1 s window vs the configured rate, at ``--rate`` and at the default 2 req/s, by
   the time each request was sent (from its audit receipt: what the limiter controls) and by the
   time the target accepted it (adds loopback and target-side scheduling jitter).

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ray


@ray.remote
def plain_noop(i: int) -> None:
    return None


def noop(ctx, item):
    return None


def plain_rate(n: int) -> float:
    t0 = time.perf_counter()
    ray.get([plain_noop.remote(i) for i in range(n)])
    return n / (time.perf_counter() - t0)


def campaign_rate(c, n: int) -> float:
    t0 = time.perf_counter()
    results = c.broadcast(noop)
    dt = time.perf_counter() - t0
    assert len(results) == n and all(r.ok for r in results)
    return n / dt


def throughput(n: int, active: int, rounds: int, store: str, ns: str, key, tmp: str) -> dict:
    """Interleaved rounds (plain, signed, unsigned, signed at active=50), medians of each."""
    from fleet_ray.campaign import Campaign

    ray.get([plain_noop.remote(i) for i in range(min(n, 200))])  # warm the worker pool
    runs: dict[str, list[float]] = {"plain": [], "signed": [], "unsigned": [], "signed50": []}
    with Campaign(n, store_url=store, namespace=ns + "-on", signing_key=key, active_concurrency=active,
                  audit={"sink": f"{tmp}/audit.ndjson"}) as signed, \
         Campaign(n, store_url=store, namespace=ns + "-off", active_concurrency=active,
                  audit={"signing": False}) as unsigned, \
         Campaign(n, store_url=store, namespace=ns + "-50", signing_key=key,
                  audit={"sink": f"{tmp}/audit50.ndjson"}) as signed50:
        for c in (signed, unsigned, signed50):
            c.broadcast(noop)  # warm-up: function caches, connections
        for _ in range(rounds):
            runs["plain"].append(plain_rate(n))
            runs["signed"].append(campaign_rate(signed, n))
            runs["unsigned"].append(campaign_rate(unsigned, n))
            runs["signed50"].append(campaign_rate(signed50, n))
        receipts = signed.status().audit.receipts
        nodes = len(signed.executor.nodes())
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"median": med, "runs": {k: [round(x) for x in v] for k, v in runs.items()}, "receipts": receipts,
            "nodes": nodes}


class _Server(ThreadingHTTPServer):
    def get_request(self):  # stamp arrivals at accept, before handler-thread scheduling adds noise
        conn = super().get_request()
        _Target.arrivals.append(time.time())
        return conn


class _Target(BaseHTTPRequestHandler):
    arrivals: list[float] = []
    protocol_version = "HTTP/1.0"  # one request per connection: one accept per request

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def limiter(rate: float, seconds: float, store: str, ns: str, key) -> dict:
    from fleet_ray.campaign import Campaign
    from fleet_ray.campaign.ratelimit import max_in_window

    _Target.arrivals = []
    server = _Server(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    n = int(rate * seconds)
    try:
        with Campaign(8, store_url=store, namespace=ns, signing_key=key, active_concurrency=8,
                      rate_limit={"per_target_rps": rate}, placement={"include_head": False}) as c:
            t0 = time.perf_counter()
            res = c.map_targets(lambda ctx, u: ctx.fetch(u).status_code, [f"{url}/{i}" for i in range(n)])
            dt = time.perf_counter() - t0
            nodes = len({r.node for r in res})
            sent = [e.data["receipt"]["payload"]["sent_at"] for e in c.events.query(kind="campaign.request")]
        assert all(r.ok and r.value == 200 for r in res), [r for r in res if not r.ok][:3]
    finally:
        server.shutdown()
    peak_sent = max_in_window(sent, 1.0)
    peak_seen = max_in_window(_Target.arrivals, 1.0)
    return {"configured_rps": rate, "requests": n, "achieved_rps": round(n / dt, 3),
            "max_sent_in_any_1s": peak_sent, "max_over_configured": round(peak_sent / rate, 3),
            "max_seen_at_target_in_any_1s": peak_seen, "max_over_configured_at_target": round(peak_seen / rate, 3),
            "member_nodes": nodes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--active", type=int, default=None,
                    help="active_concurrency for the ratio (default: all members in flight, like the plain "
                         "tasks); the campaign default of 50 is measured too")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--rate-seconds", type=float, default=6.0)
    ap.add_argument("--store", default=os.environ.get("FLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    args = ap.parse_args()
    args.active = args.active or args.members

    from ray.cluster_utils import Cluster

    from fleet_ray.campaign import SigningKey

    key = SigningKey.generate()
    ns = f"bench-campaign-{uuid.uuid4().hex[:8]}"
    tmp = tempfile.TemporaryDirectory()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="bench-campaign", logging_level="ERROR", log_to_driver=False)
    result: dict = {"bench": "campaign", "members": args.members, "active_concurrency": args.active,
                    "nodes": len(ray.nodes()), "store": args.store.split("@")[-1]}
    try:
        tp = throughput(args.members, args.active, args.rounds, args.store, ns, key, tmp.name)
        med = tp["median"]
        result.update(
            rounds=args.rounds, plain_tasks_per_s=round(med["plain"]), campaign_members_per_s=round(med["signed"]),
            campaign_members_per_s_signing_off=round(med["unsigned"]),
            ratio=round(med["signed"] / med["plain"], 3), ratio_signing_off=round(med["unsigned"] / med["plain"], 3),
            campaign_members_per_s_active50=round(med["signed50"]),
            ratio_active50=round(med["signed50"] / med["plain"], 3),
            runs_per_s=tp["runs"], receipts_after_all_rounds=tp["receipts"], member_nodes=tp["nodes"],
        )
        print(f"no-op ×{args.members}: plain {med['plain']:.0f}/s, campaign signed {med['signed']:.0f}/s, "
              f"unsigned {med['unsigned']:.0f}/s, signed at active=50 {med['signed50']:.0f}/s "
              f"→ ratio {result['ratio']}")
        fast = limiter(args.rate, args.rate_seconds, args.store, ns + "-rl", key)
        default = limiter(2.0, args.rate_seconds, args.store, ns + "-rl2", key)
        result.update(limiter=fast, limiter_default=default,
                      limiter_max_over_configured=max(fast["max_over_configured"], default["max_over_configured"]),
                      limiter_max_over_configured_at_target=max(fast["max_over_configured_at_target"],
                                                                default["max_over_configured_at_target"]))
        print(f"limiter: {fast}\nlimiter at the default rate: {default}")
    finally:
        ray.shutdown()
        cluster.shutdown()
        tmp.cleanup()
        _cleanup(args.store, ns)
    print(json.dumps(result))


def _cleanup(store: str, ns: str) -> None:
    try:
        import redis

        r = redis.Redis.from_url(store)
        for k in r.scan_iter(match=f"fleet:{ns}*", count=1000):
            r.delete(k)
    except Exception:
        pass


if __name__ == "__main__":
    main()
