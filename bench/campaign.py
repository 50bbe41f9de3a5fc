"""Benchmark: campaign dispatch overhead and the cluster-wide rate limiter.

    python -m bench.campaign [--members 1000] [--active 50] [--rate 20] [--store redis://127.0.0.1:6379/15]

On one Ray cluster (head + 2 worker nodes, ``ray.cluster_utils.Cluster``):

1. 1,000 members × a no-op task through ``Campaign.broadcast`` (members on worker actors across the
   nodes, guardrail pre-checks, receipts to the durable log) vs the same 1,000 no-ops as plain Ray
   tasks (``f.remote()`` then ``ray.get``), each warmed up first, in the same run → ``ratio``
   (members/s over tasks/s), with audit signing on (``ratio``; receipts also go to an NDJSON sink)
   and off (``ratio_signing_off``);
2. the limiter: members on 2 nodes hammer one loopback HTTP target through ``map_targets``; the
   target logs arrival times; the most requests seen in any 1 s window vs the configured rate,
   at ``--rate`` and at the default 2 req/s.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ray.get([plain_noop.remote(i) for i in range(min(n, 200))])  # warm the worker pool
    t0 = time.perf_counter()
    ray.get([plain_noop.remote(i) for i in range(n)])
    return n / (time.perf_counter() - t0)


def campaign_rate(n: int, active: int, store: str, ns: str, key, sink: str | None, signing: bool) -> dict:
    from fleet_ray.campaign import Campaign

    audit = {"signing": signing, **({"sink": sink} if sink else {})}
    with Campaign(n, store_url=store, namespace=ns, signing_key=key if signing else None,
                  active_concurrency=active, audit=audit) as c:
        c.broadcast(noop)  # warm-up: function caches, connections
        t0 = time.perf_counter()
        results = c.broadcast(noop)
        dt = time.perf_counter() - t0
        assert len(results) == n and all(r.ok for r in results)
        receipts = c.status().audit.receipts
    return {"rate": n / dt, "seconds": dt, "receipts": receipts, "workers_nodes": len(c.executor.nodes())}


class _Target(BaseHTTPRequestHandler):
    arrivals: list[float] = []

    def do_GET(self):  # noqa: N802
        type(self).arrivals.append(time.time())
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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
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
        assert all(r.ok and r.value == 200 for r in res), [r for r in res if not r.ok][:3]
    finally:
        server.shutdown()
    peak = max_in_window(_Target.arrivals, 1.0)
    return {"configured_rps": rate, "requests": n, "achieved_rps": round(n / dt, 3), "max_in_any_1s": peak,
            "max_over_configured": round(peak / rate, 3), "member_nodes": nodes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--active", type=int, default=50, help="active_concurrency (the campaign default is 50)")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--rate-seconds", type=float, default=6.0)
    ap.add_argument("--store", default=os.environ.get("FLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    args = ap.parse_args()

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
        plain = plain_rate(args.members)
        signed = campaign_rate(args.members, args.active, args.store, ns + "-on", key,
                               f"{tmp.name}/audit.ndjson", True)
        unsigned = campaign_rate(args.members, args.active, args.store, ns + "-off", key, None, False)
        result.update(
            plain_tasks_per_s=round(plain), campaign_members_per_s=round(signed["rate"]),
            campaign_members_per_s_signing_off=round(unsigned["rate"]),
            ratio=round(signed["rate"] / plain, 3), ratio_signing_off=round(unsigned["rate"] / plain, 3),
            receipts_per_run=signed["receipts"], member_nodes=signed["workers_nodes"],
        )
        print(f"no-op: plain {plain:.0f}/s, campaign signed {signed['rate']:.0f}/s, "
              f"unsigned {unsigned['rate']:.0f}/s → ratio {result['ratio']}")
        fast = limiter(args.rate, args.rate_seconds, args.store, ns + "-rl", key)
        default = limiter(2.0, args.rate_seconds, args.store, ns + "-rl2", key)
        result.update(limiter=fast, limiter_default=default,
                      limiter_max_over_configured=max(fast["max_over_configured"], default["max_over_configured"]))
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
