"""Benchmark: the control-plane API's status endpoint vs a bare FastAPI-on-Serve endpoint.

    python -m bench.api [--slots 200] [--seconds 10] [--concurrency 4] [--rounds 2] [--health-period 30]
                        [--mode running|pending]

Starts a local Ray, a supervisor with one pool of ``--slots`` real ``builtin.echo`` slots (num_cpus 0),
the fleet API (status cached for ``status_ttl_s``, 0.5 s by default) and, in the same Serve instance, a
bare FastAPI deployment returning a constant. Both are hit over HTTP on 127.0.0.1 by the same async
client (``--concurrency`` requests in flight), alternating ``--rounds`` times; requests/s and latency
percentiles are reported for each, and ``ratio`` = status requests/s ÷ bare requests/s.

On a 2-core machine the fleet itself is most of the load: every idle Ray worker process costs ~0.7 %
of a core (Ray's own background work), so 200 slots take ~1.4 cores before any request arrives; both
endpoints are measured under that same load. Health checks default to every 30 s here to keep the
supervisor's share small; ``--health-period 5`` measures with the spec's default. ``--mode pending``
keeps the 200 slot positions in the status (same payload shape and size order) without their processes,
to measure the API where the machine can't also carry 200 idle workers.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid

import httpx
import ray
from fastapi import FastAPI
from ray import serve

bare_app = FastAPI()


@bare_app.get("/const")
def const() -> dict:
    return {"ok": True}


@serve.deployment(name="Bare", num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress(bare_app)
class Bare:
    pass


async def hammer(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    """Keep ``concurrency`` GETs in flight for ``seconds``; returns (ok count, latencies in s, errors)."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                except httpx.HTTPError:  # a timeout on an overloaded box counts as an error, not a crash
                    errors += 1
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def measure(urls: dict[str, str], seconds: float, concurrency: int, rounds: int) -> dict[str, dict]:
    totals = {name: {"n": 0, "lat": [], "errors": 0, "time": 0.0} for name in urls}
    for url in urls.values():  # warm-up
        asyncio.run(hammer(url, 2.0, concurrency))
    for _ in range(rounds):
        for name, url in urls.items():
            t0 = time.perf_counter()
            n, lat, errors = asyncio.run(hammer(url, seconds, concurrency))
            totals[name]["time"] += time.perf_counter() - t0
            totals[name]["n"] += n
            totals[name]["lat"] += lat
            totals[name]["errors"] += errors
    return {
        name: {
            "rps": t["n"] / t["time"],
            "p50_ms": pct(t["lat"], 0.50),
            "p99_ms": pct(t["lat"], 0.99),
            "mean_ms": statistics.fmean(t["lat"]) * 1000 if t["lat"] else float("nan"),
            "requests": t["n"],
            "errors": t["errors"],
        }
        for name, t in totals.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="per round and endpoint")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--status-ttl", type=float, default=0.5)
    ap.add_argument("--health-period", type=float, default=30.0, help="slot health-check period (s)")
    ap.add_argument("--mode", choices=["running", "pending"], default="running",
                    help="running: real slot actors; pending: slot positions placed nowhere (no processes)")
    args = ap.parse_args()

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import free_port, wait_ready

    ns = f"bench-api-{uuid.uuid4().hex[:6]}"
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")  # Serve's 5 s is short on a busy box
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=ns, logging_level="ERROR",
             log_to_driver=False)
    tmp = tempfile.mkdtemp(prefix="bench-api-")
    fleet = FleetClient(start_supervisor(f"sqlite://{tmp}/store.db", namespace=ns, tick_s=0.1), ns)
    try:
        # the API first (as `fleet-ray up` does): Serve's proxy must start before 200 workers load the box
        base = start_api(namespace=ns, port=free_port(), token=uuid.uuid4().hex, status_ttl_s=args.status_ttl)
        serve.run(Bare.bind(), name="bare", route_prefix="/bare", blocking=False)
        wait_ready(base)
        root = "/".join(base.split("/")[:3])  # the API lives under /<namespace>, the bare app under /bare
        r = httpx.get(f"{root}/bare/const", timeout=30)
        assert r.status_code == 200, f"bare endpoint: HTTP {r.status_code} {r.text[:200]}"
        t0 = time.perf_counter()
        pool = {"name": "bench", "automation": "builtin.echo", "slots": args.slots,
                "health": {"period_s": args.health_period, "start_timeout_s": 1800}}
        if args.mode == "pending":  # 200 slot positions no node can host: the same status, no processes
            pool["placement"] = {"resources": {"bench-no-such-node": 1}}
        fleet.apply({"pools": [pool]})
        if args.mode == "pending":
            fleet.wait_until(lambda st: st.pools[0].counts.get("pending") == args.slots, 120)
        else:
            fleet.wait_ready(timeout_s=max(600, args.slots * 6))
        print(f"{args.slots} slots {'pending' if args.mode == 'pending' else 'running'} after "
              f"{time.perf_counter() - t0:.1f}s")
        urls = {"status": f"{base}/api/v1/status", "bare": f"{root}/bare/const"}
        wait_ready(base, timeout_s=600)  # a loaded box may answer slowly right after 200 workers started
        body = httpx.get(urls["status"], timeout=120).json()
        slots_seen = sum(len(p["slots"]) for p in body["pools"])
        assert slots_seen == args.slots, f"status shows {slots_seen} slots, expected {args.slots}"
        size = len(httpx.get(urls["status"], headers={"Accept-Encoding": "identity"}, timeout=120).content)
        print(f"status: {slots_seen} slots, {size} bytes of JSON (gzip on the wire)")
        res = measure(urls, args.seconds, args.concurrency, args.rounds)
        for name, r in res.items():
            print(f"{name:>6}: {r['rps']:.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                  f"({r['requests']} requests, {r['errors']} errors)")
        result = {
            "bench": "api",
            "slots": args.slots,
            "mode": args.mode,
            "status_rps": round(res["status"]["rps"], 1),
            "status_p50_ms": round(res["status"]["p50_ms"], 2),
            "status_p99_ms": round(res["status"]["p99_ms"], 2),
            "bare_rps": round(res["bare"]["rps"], 1),
            "bare_p50_ms": round(res["bare"]["p50_ms"], 2),
            "bare_p99_ms": round(res["bare"]["p99_ms"], 2),
            "ratio": round(res["status"]["rps"] / res["bare"]["rps"], 3) if res["bare"]["rps"] else None,
            "status_bytes": size,
            "status_ttl_s": args.status_ttl,
            "concurrency": args.concurrency,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "errors": res["status"]["errors"] + res["bare"]["errors"],
        }
        serve.delete("bare")
        stop_api(ns)
    finally:
        try:
            serve.shutdown()
        finally:
            fleet.down(timeout_s=10)
            ray.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
