"""Benchmark: rolling a pool of 8 slots to a new package version under continuous batch load.

    python -m bench.rollout [--slots 8] [--max-unavailable 1] [--delay-ms 5]

Publishes two versions of a small automation package, runs a pool on v1 with a steady stream of
items, measures items/s before the rollout, applies v2 and measures items/s during it and the time
until the rollout is complete. Reports ``throughput_ratio`` (during / before; target >= 0.7),
``rollout_s``, and checks that every item got exactly one result. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import ray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--max-unavailable", type=int, default=1)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.spec.packages import publish
    from fleet_ray.store import open_store
    from tests.integration.test_rollout import make_project

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    store_url = f"sqlite://{root}/s.db"
    ray.init(address="local", namespace="bench-rollout", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    fleet = FleetClient(start_supervisor(store_url, namespace="bench-rollout", tick_s=0.05), "bench-rollout")
    store = open_store(store_url, "bench-rollout")
    for v in ("1.0.0", "1.1.0"):
        publish(store, make_project(root, v))

    def pool(version: str) -> dict:
        return {"name": "r", "automation": "rollout.demo", "package": f"rollout-demo=={version}",
                "slots": args.slots, "concurrency": args.concurrency, "health": {"period_s": 0.5},
                "rollout": {"max_unavailable": args.max_unavailable}, "recycle": {"drain_timeout_s": 30}}

    result: dict = {"bench": "rollout", "slots": args.slots, "max_unavailable": args.max_unavailable}
    try:
        fleet.apply({"pools": [pool("1.0.0")]})
        fleet.wait_ready(600)
        n = 200_000
        job = fleet.submit("r", list(range(n)))
        stamps: list[float] = []
        seen: list[str] = []
        stop = threading.Event()

        def consume() -> None:
            for r in job.results(timeout_s=3600):
                stamps.append(time.monotonic())
                seen.append(r.item_id)
                if stop.is_set():
                    return

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(3)  # warm up
        t0 = time.monotonic()
        time.sleep(10)
        before = sum(1 for s in stamps if s >= t0) / (time.monotonic() - t0)
        r0 = time.monotonic()
        fleet.apply({"pools": [pool("1.1.0")]})
        fleet.wait_until(lambda s: s.pool("r").rollout is not None and s.pool("r").rollout.state == "complete",
                         timeout_s=1800, interval_s=0.2)
        r1 = time.monotonic()
        during = sum(1 for s in stamps if r0 <= s <= r1) / (r1 - r0)
        stop.set()
        fleet.pause("r")
        job.drop()
        dup = len(seen) - len(set(seen))
        result.update(items_per_s_before=round(before, 1), items_per_s_during=round(during, 1),
                      throughput_ratio=round(during / before, 3), rollout_s=round(r1 - r0, 2),
                      duplicate_results=dup)
        print(f"before {before:.0f}/s, during rollout {during:.0f}/s, rollout {r1 - r0:.1f}s, duplicates {dup}")
    finally:
        try:
            fleet.down(timeout_s=10)
        finally:
            ray.shutdown()
            tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
