"""Benchmark: an autoscaled pool against a fixed pool of its max_slots, under bursty batch work.

    python -m bench.autoscale [--slots 4] [--bursts 3] [--burst-s 30] [--idle-s 75] [--trickle 2]

Two pools in one fleet run ``builtin.sleep`` (``--delay-ms`` per item, ``--concurrency`` items per slot):
``auto`` with ``autoscale: {min_slots: 1, max_slots: --slots}`` and ``fixed`` with ``slots: --slots``. Each
burst submits the same number of items to both at once, as many as the fixed pool works off in about
``--burst-s``; between bursts ``--idle-s`` of idle time in which a trickle of ``--trickle`` items/s goes to
both (so the autoscaled pool's scale-down drains slots with items in flight). Reported:

- ``items_per_s_auto`` / ``items_per_s_fixed`` over the bursts (each burst from its submit to its last
  result) and their ratio ``throughput_ratio`` (goal >= 0.9);
- ``slot_seconds_auto`` / ``slot_seconds_fixed``: slot actors alive (starting, running, draining,
  stopping), integrated over the run from the first burst, and ``slot_seconds_ratio`` (goal <= 0.6);
- ``to_full_size_s``: per burst, from its submit until the autoscaled pool runs ``--slots`` slots;
- ``lost`` / ``duplicated``: items of either pool without a result, or with more than one (must be 0).

Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import ray

ALIVE = ("starting", "running", "draining", "stopping", "unreachable")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=4, help="the fixed pool's slots and the autoscaled one's max_slots")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--delay-ms", type=float, default=100.0)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--burst-s", type=float, default=30.0, help="the fixed pool's time for one burst")
    ap.add_argument("--idle-s", type=float, default=75.0)
    ap.add_argument("--trickle", type=float, default=2.0, help="items/s to each pool between bursts")
    ap.add_argument("--upscale-delay-s", type=float, default=0.5)
    ap.add_argument("--downscale-delay-s", type=float, default=5.0)
    ap.add_argument("--cooldown-s", type=float, default=2.0)
    args = ap.parse_args()

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    m, c, delay = args.slots, args.concurrency, args.delay_ms / 1000
    per_burst = int(args.burst_s * m * c / delay)
    tmp = tempfile.TemporaryDirectory()
    store_url = f"sqlite://{Path(tmp.name)}/s.db"
    ray.init(address="local", namespace="bench-autoscale", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    fleet = FleetClient(start_supervisor(store_url, namespace="bench-autoscale", tick_s=0.05), "bench-autoscale")

    def pool(name: str, **extra) -> dict:
        return {"name": name, "automation": "builtin.sleep", "config": {"delay_s": delay}, "concurrency": c,
                "health": {"period_s": 1.0}, "recycle": {"drain_timeout_s": 30}, **extra}

    policy = {"min_slots": 1, "max_slots": m, "smoothing_s": 0, "upscale_delay_s": args.upscale_delay_s,
              "downscale_delay_s": args.downscale_delay_s, "cooldown_s": args.cooldown_s}
    result: dict = {"bench": "autoscale", "slots": m, "concurrency": c, "delay_ms": args.delay_ms,
                    "bursts": args.bursts, "items_per_burst": per_burst, "idle_s": args.idle_s,
                    "trickle_per_s": args.trickle, "autoscale": policy}
    samples: list[tuple[float, int, int, int]] = []  # (t, auto alive, fixed alive, auto running)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                st = fleet.status()
            except Exception:
                time.sleep(0.25)
                continue
            a, f = st.pool("auto"), st.pool("fixed")
            samples.append((time.monotonic(), sum(1 for s in a.slots if s.state in ALIVE),
                            sum(1 for s in f.slots if s.state in ALIVE), a.counts.get("running", 0)))
            time.sleep(0.25)

    seen: dict[str, dict[str, int]] = {"auto": {}, "fixed": {}}
    submitted: dict[str, set[str]] = {"auto": set(), "fixed": set()}
    lock = threading.Lock()

    def follow(name: str, job, done: dict) -> None:
        for r in job.results(timeout_s=3600):
            key = f"{job.id}:{r.item_id}"
            with lock:
                seen[name][key] = seen[name].get(key, 0) + (1 if r.ok else 0)
        done[name] = time.monotonic()

    def submit(name: str, items: list, job_id: str, ids: list[str] | None = None):
        ids = ids or [str(i) for i in range(len(items))]
        job = fleet.submit(name, items, job_id=job_id, ids=ids)
        with lock:
            submitted[name].update(f"{job_id}:{i}" for i in ids)
        return job
    try:
        fleet.apply({"pools": [pool("auto", slots=1, autoscale=policy), pool("fixed", slots=m)]})
        fleet.wait_ready(300)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t_start = time.monotonic()
        durations: dict[str, list[float]] = {"auto": [], "fixed": []}
        full_size: list[float | None] = []
        for b in range(args.bursts):
            b0 = time.monotonic()
            done: dict[str, float] = {}
            jobs = {name: submit(name, list(range(per_burst)), f"burst{b}") for name in ("auto", "fixed")}
            threads = [threading.Thread(target=follow, args=(n, j, done), daemon=True) for n, j in jobs.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for name in ("auto", "fixed"):
                durations[name].append(done[name] - b0)
            full = next((t - b0 for t, _, _, running in samples if t >= b0 and running >= m), None)
            full_size.append(round(full, 2) if full is not None else None)
            print(f"burst {b}: auto {durations['auto'][-1]:.1f}s, fixed {durations['fixed'][-1]:.1f}s, "
                  f"auto at {m} slots after {full_size[-1]}s", flush=True)
            # idle: a trickle to both (one job per idle period, an item at a time), so the scale-down
            # drains slots with items in flight; its results are collected at the end of the period
            idle_end = time.monotonic() + args.idle_s
            n = 0
            while time.monotonic() < idle_end:
                if args.trickle > 0:
                    for name in ("auto", "fixed"):
                        submit(name, [n], f"trickle{b}", ids=[str(n)])
                    n += 1
                time.sleep(1 / args.trickle if args.trickle > 0 else 1)
            if n:
                for name in ("auto", "fixed"):
                    follow(name, fleet.job(name, f"trickle{b}"), {})
        t_end = time.monotonic()
        stop.set()
        sampler.join(timeout=5)

        def slot_seconds(i: int) -> float:
            pts = [(x[0], x[1 + i]) for x in samples if t_start <= x[0] <= t_end]
            return sum(v * (t2 - t1) for (t1, v), (t2, _) in zip(pts, pts[1:], strict=False))

        ss_auto, ss_fixed = slot_seconds(0), slot_seconds(1)
        total = per_burst * args.bursts
        ips = {name: total / sum(durations[name]) for name in ("auto", "fixed")}
        lost = sum(len(submitted[n] - {k for k, v in seen[n].items() if v >= 1}) for n in seen)
        duplicated = sum(1 for n in seen for v in seen[n].values() if v > 1)
        scaled = [e for e in fleet.events(limit=200) if e["kind"] == "pool.scaled"]
        known = [x for x in full_size if x is not None]
        result.update(
            items_per_s_auto=round(ips["auto"], 1), items_per_s_fixed=round(ips["fixed"], 1),
            throughput_ratio=round(ips["auto"] / ips["fixed"], 3),
            burst_s_auto=[round(x, 2) for x in durations["auto"]], burst_s_fixed=[round(x, 2) for x in durations["fixed"]],
            slot_seconds_auto=round(ss_auto, 1), slot_seconds_fixed=round(ss_fixed, 1),
            slot_seconds_ratio=round(ss_auto / ss_fixed, 3) if ss_fixed else None,
            run_s=round(t_end - t_start, 1), to_full_size_s=full_size,
            to_full_size_s_median=round(statistics.median(known), 2) if known else None,
            scale_events=len(scaled), items=sum(len(s) for s in submitted.values()), lost=lost, duplicated=duplicated,
        )
        print(f"items/s auto {ips['auto']:.0f} vs fixed {ips['fixed']:.0f} ({result['throughput_ratio']}); "
              f"slot-seconds {ss_auto:.0f} vs {ss_fixed:.0f} ({result['slot_seconds_ratio']}); "
              f"lost {lost}, duplicated {duplicated}", flush=True)
    finally:
        stop.set()
        try:
            fleet.down(timeout_s=10)
        finally:
            ray.shutdown()
            tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
