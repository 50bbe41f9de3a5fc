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
3. **partition recovery**: the link of the host holding a slot of that pool goes down for
   ``--partition-s`` seconds, then up: seconds from link-up until the pool is ``ok`` with every slot
   ``running``, and the batch job across it (lost / duplicated).

Status is sampled on the head every 0.25 s by a driver running there (``head_driver.py monitor``).
Last stdout line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tests.integration.multihost.drive import drive, driver_result, start_driver
from tests.integration.multihost.hosts import HostCluster, HostSpec, kill_spawned, namespaces_unavailable

HEALTH = {"period_s": 0.5, "timeout_s": 5}


def pool(name: str, tag: str, slots: int, delay_s: float, concurrency: int = 4) -> dict[str, Any]:
    return {"name": name, "automation": "builtin.sleep", "slots": slots, "concurrency": concurrency,
            "config": {"delay_s": delay_s}, "placement": {"resources": {tag: 1}}, "health": HEALTH,
            "recycle": {"drain_timeout_s": 5}, "heal": {"backoff_base_s": 0.5, "backoff_max_s": 2}}


class Monitor:
    """``head_driver.py monitor`` on the head: status rows ``{"t", "pools": …}`` in ``~/monitor.jsonl``."""

    def __init__(self, cluster: HostCluster):
        self.head = cluster.head
        self.path = self.head.home / "monitor.jsonl"
        self.proc = start_driver(self.head, "monitor", {"path": "/home/fleet/monitor.jsonl", "stop": "/home/fleet/stop",
                                                        "every_s": 0.25, "max_s": 1800}, "monitor.log")

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written
        return out

    def first(self, after: float, ok, timeout_s: float = 300) -> float | None:
        """Wall time of the first row after ``after`` for which ``ok(row)``; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for row in self.rows():
                if row["t"] >= after and "pools" in row and ok(row):
                    return row["t"]
            time.sleep(0.25)
        return None

    def stop(self) -> None:
        (self.head.home / "stop").write_text("")
        try:
            self.proc.wait(timeout=10)
        except Exception:
            kill_spawned(self.proc)


def all_running(name: str, desired: int, avoid_ip: str | None = None):
    def ok(row: dict[str, Any]) -> bool:
        p = row["pools"].get(name)
        if not p or p["counts"].get("running", 0) != desired or len(p["slots"]) != desired:
            return False
        return all(s["state"] == "running" and s["ip"] and s["ip"] != avoid_ip for s in p["slots"])
    return ok


def pool_ok(name: str, desired: int):
    running = all_running(name, desired)
    return lambda row: running(row) and row["pools"][name]["state"] == "ok"


def holder(cluster: HostCluster, slots: list[dict[str, Any]]):
    """The worker host holding most of ``slots``."""
    ips = [s["ip"] for s in slots]
    return max(cluster.workers, key=lambda w: ips.count(w.ip))


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
        monitor = Monitor(cluster)
        try:
            placed = drive(head, "apply", {"spec": {"pools": [pool("heal", "browser", 2, 0.05, concurrency=2)]}})["heal"]
            victim = holder(cluster, placed)
            job = start_driver(head, "batch", {"pool": "heal", "items": 300, "job_id": "across-loss"}, "loss.log")
            time.sleep(2)  # the job is under way on both slots
            t_loss = time.time()
            victim.power_off()
            healed = monitor.first(t_loss, all_running("heal", 2, avoid_ip=victim.ip))
            result["heal_after_host_loss_s"] = round(healed - t_loss, 2) if healed else None
            job.wait(timeout=600)
            loss = driver_result(head, "loss.log")
            result["host_loss_lost"], result["host_loss_duplicated"] = loss["lost"], loss["duplicated"]
            victim.restart()

            # partition: the host holding a slot now loses its link for a while
            now = drive(head, "status")["slots"]["heal"]
            cut = holder(cluster, now)
            job = start_driver(head, "batch", {"pool": "heal", "items": 300, "job_id": "across-cut"}, "cut.log")
            time.sleep(2)
            cut.link_down()
            time.sleep(args.partition_s)
            t_up = time.time()
            cut.link_up()
            ok = monitor.first(t_up, pool_ok("heal", 2))
            result["partition_s"] = args.partition_s
            result["partition_recovery_s"] = round(ok - t_up, 2) if ok else None
            job.wait(timeout=600)
            part = driver_result(head, "cut.log")
            result["partition_lost"], result["partition_duplicated"] = part["lost"], part["duplicated"]
        finally:
            monitor.stop()
    result["cluster_close_s"] = cluster.timings.get("close_s")
    print(f"spread {result['spread_items_per_s']}/s vs one host {result['solo_items_per_s']}/s "
          f"({result['spread_vs_one_host']}x); heal after host loss {result['heal_after_host_loss_s']}s; "
          f"partition recovery {result['partition_recovery_s']}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
