"""Benchmark: a fleet on three real hosts (Linux namespaces running the shipped ``deploy/fleet-node.sh``).

    python -m bench.multihost [--slots 4] [--items 600] [--delay-ms 20] [--partition-s 20]

Needs root and ``ip netns`` (what the multi-host tests need). On a head and two worker hosts:

1. **spread vs one host**: a batch pool of ``--slots`` slots split over the two worker hosts (tag
   ``spread``: half the slots' worth on each) against the same pool on one worker host (tag ``solo``),
   the same ``--items`` items of ``builtin.sleep`` each, in the same run: items/s of both and the
   ratio (spread / one host);
2. **heal after host loss**: a pool of 2 slots on tag ``browser``; every process of the host holding
   most of them is killed (its kernel still answers): seconds from the kill to every slot ``running``
   on the surviving host, with a batch job running across it (lost / duplicated results);
3. **partition recovery**: the link of the host holding most of that pool goes down for
   ``--partition-s`` seconds, then up: seconds from the cut until its slots show ``unreachable``, from
   the cut until the pool is ``ok`` again (during the partition when it outlasts Ray's node-death
   detection and the slots moved; the JSON says which), from link-up until ``ok``, how many slots
   were replaced, and the batch job across it (lost / duplicated).

All hosts are namespaces on one machine: the spread-vs-one-host ratio shows what crossing hosts
costs (veth hops, cross-node object transfers), not more cores — there are as many as the machine has.

Status is sampled on the head every 0.25 s by a driver running there (``head_driver.py monitor``).
Last stdout line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tests.integration.multihost.drive import (
    Monitor,
    all_running,
    drive,
    driver_result,
    holder,
    pool_ok,
    slots,
    start_batch,
)
from tests.integration.multihost.hosts import HostCluster, HostSpec, namespaces_unavailable

HEALTH = {"period_s": 0.5, "timeout_s": 5}


def pool(name: str, tag: str, slots: int, delay_s: float, concurrency: int = 4) -> dict[str, Any]:
    return {"name": name, "automation": "builtin.sleep", "slots": slots, "concurrency": concurrency,
            "config": {"delay_s": delay_s}, "placement": {"resources": {tag: 1}}, "health": HEALTH,
            "recycle": {"drain_timeout_s": 5}, "heal": {"backoff_base_s": 0.5, "backoff_max_s": 2}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=4, help="slots of the throughput pools (even)")
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--delay-ms", type=float, default=20.0, help="each item's sleep")
    ap.add_argument("--partition-s", type=float, default=20.0)
    args = ap.parse_args()
    why = namespaces_unavailable()
    if why:
        raise SystemExit(f"bench.multihost: {why}")
    half = max(1, args.slots // 2)
    specs = [HostSpec("head", "head"),
             HostSpec("w1", resources={"spread": half, "solo": args.slots, "browser": 2}),
             HostSpec("w2", resources={"spread": half, "browser": 2})]
    delay = args.delay_ms / 1000
    result: dict[str, Any] = {"bench": "multihost", "hosts": 3, "slots": args.slots, "items": args.items,
                              "delay_ms": args.delay_ms}
    with HostCluster(specs) as cluster:
        result["cluster_start_s"] = cluster.timings.get("start_s")
        head = cluster.head
        # 1. the same pool spread over two hosts and on one host, one after the other in this run
        for name, tag in (("spread", "spread"), ("solo", "solo")):
            placed = drive(head, "apply", {"spec": {"pools": [pool(name, tag, args.slots, delay)]}})[name]
            ips = sorted({s["ip"] for s in placed})
            drive(head, "batch", {"pool": name, "items": 40})  # warm: imports, first leases
            out = drive(head, "batch", {"pool": name, "items": args.items}, timeout=900)
            result[f"{name}_items_per_s"] = round(out["items_per_s"], 1)
            result[f"{name}_hosts"] = len(ips)
            result[f"{name}_lost"], result[f"{name}_duplicated"] = out["lost"], out["duplicated"]
        result["spread_vs_one_host"] = round(result["spread_items_per_s"] / result["solo_items_per_s"], 3)
        drive(head, "apply", {"spec": {"pools": []}})

        # 2. + 3. a pool of 2 on "browser" (2 per host: room for both on either host)
        monitor = Monitor(head, "bench")

        def first(ok, after: float) -> float | None:
            try:
                return monitor.wait(ok, after=after, timeout_s=300)["t"]
            except AssertionError:
                return None
        try:
            placed = drive(head, "apply", {"spec": {"pools": [pool("heal", "browser", 2, 0.05, concurrency=2)]}})["heal"]
            victim = holder(cluster, placed)
            job = start_batch(head, "heal", 300, "across-loss")
            t_loss = time.time()
            victim.power_off()
            healed = first(all_running("heal", 2, off=victim.ip), t_loss)
            result["heal_after_host_loss_s"] = round(healed - t_loss, 2) if healed else None
            job.wait(timeout=600)
            loss = driver_result(head, "across-loss.log")
            result["host_loss_lost"], result["host_loss_duplicated"] = loss["lost"], loss["duplicated"]
            victim.restart()

            # partition: the host holding most of the pool now loses its link for a while
            now = drive(head, "status")["slots"]["heal"]
            cut = holder(cluster, now)
            before = {s["id"]: s["generation"] for s in now}
            job = start_batch(head, "heal", 300, "across-cut")
            t_down = time.time()
            cut.link_down()
            seen = first(lambda r: any(s["state"] == "unreachable" for s in slots(r, "heal")), t_down)
            time.sleep(max(0.0, args.partition_s - (time.time() - t_down)))  # the partition itself
            t_up = time.time()
            cut.link_up()
            ok = first(pool_ok("heal", 2), t_up)
            # healthy again after the slots went unreachable (before that the pool is ok: nobody noticed yet)
            ok_rows = [r for r in monitor.rows(seen or t_down) if pool_ok("heal", 2)(r)]
            result["partition_s"] = args.partition_s
            result["partition_unreachable_after_s"] = round(seen - t_down, 2) if seen else None
            # slots moved during the partition when it outlasts Ray's node-death detection
            moved = ok_rows[0]["t"] if ok_rows and ok_rows[0]["t"] < t_up else None
            result["partition_replaced_during"] = moved is not None
            result["partition_healthy_after_cut_s"] = round((moved or ok or t_up) - t_down, 2) if (moved or ok) else None
            result["partition_recovery_after_link_up_s"] = round(ok - t_up, 2) if ok else None
            after = {s["id"]: s["generation"] for s in drive(head, "status")["slots"]["heal"]}
            result["partition_slots_replaced"] = sum(after[k] != v for k, v in before.items())
            job.wait(timeout=600)
            part = driver_result(head, "across-cut.log")
            result["partition_lost"], result["partition_duplicated"] = part["lost"], part["duplicated"]
        finally:
            monitor.close()
        # what the head's node.env overrides of fleet-node.sh's node-death defaults (period/timeout/misses)
        knobs = head.run("echo $RAY_health_check_period_ms/$RAY_health_check_timeout_ms/"
                         "$RAY_health_check_failure_threshold", 30).stdout.strip()
        result["ray_health_check"] = knobs if knobs.strip("/") else "fleet-node.sh defaults 1000/2000/5"
    result["cluster_close_s"] = cluster.timings.get("close_s")
    print(f"spread {result['spread_items_per_s']}/s vs one host {result['solo_items_per_s']}/s "
          f"({result['spread_vs_one_host']}x); heal after host loss {result['heal_after_host_loss_s']}s; "
          f"partition: healthy {result['partition_healthy_after_cut_s']}s after the cut, "
          f"{result['partition_recovery_after_link_up_s']}s after link-up")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
