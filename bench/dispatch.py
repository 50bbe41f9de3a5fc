"""Benchmark: batch dispatch throughput, heal latency, and the supervisor's reconcile step.

    python -m bench.dispatch [--slots 4] [--items 20000] [--heal-repeats 5] [--reconcile-slots 200]

1. items/s through a batch pool of K slots doing no-op work vs plain Ray actor calls on K actors
   (one ``actor.f.remote(item)`` per item, round-robin, then ``ray.get``), same run: with the durable
   work queue (the default: items, leases and results written to the store, ``--store``) → ``ratio``,
   and with the in-memory one (``work_queue: {durable: false}``) → ``ratio_memory``;
   ``durable_vs_memory`` compares the two;
2. heal latency: SIGKILL a slot's process → its replacement is running (median over repeats);
3. reconcile step: the supervisor's measured step duration with ``--reconcile-slots`` real slots
   (``reconcile_step_ms``: the median of every step in the supervisor's own window of its last 200
   steps, read over 20 s; ``reconcile_step_sampled_median_ms``: the last step, sampled 4×/s), and the
   pure decide+observe step on 1,000 synthetic slots.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time

import ray


@ray.remote(num_cpus=0)
class PlainActor:
    def f(self, item):
        return None


def plain_throughput(k: int, n: int) -> float:
    actors = [PlainActor.remote() for _ in range(k)]
    ray.get([a.f.remote(0) for a in actors])
    t0 = time.perf_counter()
    refs = [actors[i % k].f.remote(i) for i in range(n)]
    ray.get(refs)
    dt = time.perf_counter() - t0
    for a in actors:
        ray.kill(a)
    return n / dt


def fleet_throughput(fleet, k: int, n: int, durable: bool = True) -> float:
    name = "noop" if durable else "noop-mem"
    fleet.apply({"pools": [{"name": name, "automation": "builtin.noop", "slots": k, "concurrency": 64,
                            "health": {"period_s": 1}, "work_queue": {"durable": durable}}]})
    fleet.wait_ready(120)
    fleet.map(name, list(range(k * 10)), timeout_s=60)  # warm-up
    t0 = time.perf_counter()
    results = fleet.map(name, list(range(n)), timeout_s=600)
    dt = time.perf_counter() - t0
    assert len(results) == n and all(r.ok for r in results)
    return n / dt


def heal_latency(fleet, repeats: int) -> list[float]:
    # repeated kills of one position would (rightly) trigger the heal backoff; measure plain healing
    fleet.apply({"pools": [{"name": "heal", "automation": "builtin.echo", "slots": 2,
                            "health": {"period_s": 1}, "heal": {"max_failures": 1000}}]})
    fleet.wait_ready(120)
    out = []
    for _ in range(repeats):
        st = fleet.status()
        victim = st.slot("heal:0")
        t0 = time.perf_counter()
        os.kill(victim.pid, signal.SIGKILL)
        fleet.wait_until(
            lambda s, g=victim.generation: s.slot("heal:0").generation == g + 1
            and s.slot("heal:0").state == "running",
            timeout_s=60,
            interval_s=0.01,
        )
        out.append(time.perf_counter() - t0)
    return out


def real_reconcile(fleet, slots: int) -> dict[str, float]:
    fleet.apply({"pools": [{"name": "many", "automation": "builtin.echo", "slots": slots,
                            "health": {"period_s": 2}}]})
    t0 = time.perf_counter()
    fleet.wait_ready(1800)
    ready_s = time.perf_counter() - t0
    samples, cpu, windows = [], [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # 4 samples/s: a 200-slot status 20 times a second would load
        st = fleet.status()             # the supervisor it measures
        samples.append(st.last_step_ms)
        cpu.append(st.last_step_cpu_ms)
        windows.append((st.step_ms_p50, st.step_ms_p95))
        time.sleep(0.25)
    # the supervisor's own window: every step of the last 200 (~10 s at tick 0.05 s), not samples
    p50 = statistics.median(w[0] for w in windows[len(windows) // 2:])
    p95 = statistics.median(w[1] for w in windows[len(windows) // 2:])
    return {"median_ms": p50, "p95_ms": p95,
            "sampled_median_ms": statistics.median(samples),
            "cpu_median_ms": statistics.median(cpu), "cpu_p95_ms": sorted(cpu)[int(len(cpu) * 0.95) - 1],
            "supervisor_nice": st.supervisor_nice, "ready_s": ready_s}


def synthetic_reconcile(slots: int, rounds: int = 50) -> float:
    """decide() + observe() over ``slots`` running records, the supervisor's CPU work per step."""
    from fleet_ray.control.lifecycle import HealthReport, Ready, SlotRecord, SlotState, SlotTable, observe
    from fleet_ray.control.reconcile import NodeView, decide, placement_problem
    from fleet_ray.spec.models import PoolSpec

    pool = PoolSpec(name="p", automation="builtin.echo", slots=slots)
    table = SlotTable()
    for i in range(slots):
        rec = SlotRecord("p", i, generation=1, state=SlotState.STARTING, created_at=0.0)
        rec.shape_hash, rec.config_hash = pool.slot_shape_hash(), pool.config_hash()
        table.add(rec)
        observe(table, Ready(rec.key, 1, pid=i, node_id="n"), 0.0, pool)
    nodes = [NodeView(f"n{i}", True, {"CPU": 16}) for i in range(16)]
    times = []
    for r in range(rounds):
        now = 1.0 + r
        t0 = time.perf_counter()
        for i in range(0, slots, 10):  # a tenth of the slots report health each step
            observe(table, HealthReport(("p", i), 1, ok=True, tasks=r), now, pool)
        decide({"p": pool}, table, {"p": placement_problem(pool.placement, nodes)}, now)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--heal-repeats", type=int, default=5)
    ap.add_argument("--reconcile-slots", type=int, default=200)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--store", default=None,
                    help="the fleet's store URL (default: an embedded SQLite file in a temporary directory)")
    args = ap.parse_args()

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    tmp = tempfile.TemporaryDirectory()
    ray.init(address="local", num_cpus=args.num_cpus, namespace="bench", include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    store_url = args.store or f"sqlite://{tmp.name}/s.db"
    fleet = FleetClient(start_supervisor(store_url, namespace="bench", tick_s=0.05), "bench")
    result: dict = {"bench": "dispatch", "cpus": args.num_cpus, "slots": args.slots, "items": args.items,
                    "store": store_url.split("://")[0]}
    try:
        # the pure step first, while the machine is quiet (later the 200 slots' processes share it)
        result["reconcile_step_ms_synthetic_1000"] = round(synthetic_reconcile(1000), 3)
        result["reconcile_step_ms_synthetic_200"] = round(synthetic_reconcile(200), 3)
        plain = plain_throughput(args.slots, args.items)
        fleet_ips = fleet_throughput(fleet, args.slots, args.items, durable=True)
        memory_ips = fleet_throughput(fleet, args.slots, args.items, durable=False)
        result.update(plain_items_per_s=round(plain), fleet_items_per_s=round(fleet_ips),
                      fleet_memory_items_per_s=round(memory_ips), ratio=round(fleet_ips / plain, 3),
                      ratio_memory=round(memory_ips / plain, 3), durable_vs_memory=round(fleet_ips / memory_ips, 3))
        print(f"throughput: fleet durable {fleet_ips:.0f}/s, in memory {memory_ips:.0f}/s, plain actors "
              f"{plain:.0f}/s; ratios durable/plain {fleet_ips / plain:.2f}, memory/plain {memory_ips / plain:.2f}, "
              f"durable/memory {fleet_ips / memory_ips:.2f}")
        if args.heal_repeats:
            heals = heal_latency(fleet, args.heal_repeats)
            result.update(heal_latency_s=round(statistics.median(heals), 3),
                          heal_samples_s=[round(h, 3) for h in heals])
            print(f"heal latency: median {statistics.median(heals):.3f}s over {len(heals)}")
        fleet.apply({"pools": []})
        fleet.wait_until(lambda s: not s.pools, 120)
        if args.reconcile_slots:
            rec = real_reconcile(fleet, args.reconcile_slots)
            result.update(reconcile_slots=args.reconcile_slots, reconcile_step_ms=round(rec["median_ms"], 3),
                          reconcile_step_p95_ms=round(rec["p95_ms"], 3),
                          reconcile_step_cpu_ms=round(rec["cpu_median_ms"], 3),
                          reconcile_step_cpu_p95_ms=round(rec["cpu_p95_ms"], 3),
                          reconcile_step_sampled_median_ms=round(rec["sampled_median_ms"], 3),
                          supervisor_nice=rec["supervisor_nice"], reconcile_slots_ready_s=round(rec["ready_s"], 1))
            print(f"reconcile step with {args.reconcile_slots} real slots: {rec}")
    finally:
        try:
            fleet.down(timeout_s=30)
        finally:
            ray.shutdown()
            tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
