"""Driving a fleet on namespace hosts from outside, for the tests and ``bench.multihost``: run
:mod:`head_driver` commands on a host, batch jobs in the background, a status monitor on the head,
and the predicates over its rows that both ask."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from typing import Any

from .hosts import Host, HostCluster, HostError, kill_spawned, parse_json_output

DRIVER = "~/fleet-ray/tests/integration/multihost/head_driver.py"
REMOTE_HOME = "/home/fleet"


def driver_cmd(command: str, args: dict[str, Any] | None = None) -> str:
    return f"python {DRIVER} {command} {shlex.quote(json.dumps(args or {}))}"


def drive(host: Host, command: str, args: dict[str, Any] | None = None, timeout: float = 300) -> Any:
    """Run ``head_driver.py <command>`` on ``host`` and return the JSON it printed."""
    done = host.run(driver_cmd(command, args), timeout)
    if done.returncode != 0:
        raise HostError(f"{host.tag}: {command} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
                        f"--- stderr\n{done.stderr[-6000:]}")
    return parse_json_output(done.stdout, f"{host.tag}: {command}")


def start_driver(host: Host, command: str, args: dict[str, Any] | None = None, log_name: str | None = None
                 ) -> subprocess.Popen:
    """``head_driver.py <command>`` in the background on ``host``; its output goes to ``~/<log_name>``
    (read it from ``host.home / log_name``) when given."""
    redirect = f" > ~/{log_name} 2>&1" if log_name else ""
    return host.spawn(driver_cmd(command, args) + redirect)


def driver_result(host: Host, log_name: str) -> Any:
    return parse_json_output((host.home / log_name).read_text(), f"{host.tag}: ~/{log_name}")


def start_batch(head: Host, pool: str, items: int, job_id: str, timeout_s: float = 120, **extra: Any
                ) -> subprocess.Popen:
    """A batch job driven from the head in the background (``head_driver.py batch``, output in
    ``~/<job_id>.log``); returns once its items are queued, so the caller may break things."""
    marker = head.home / f"{job_id}.started"
    marker.unlink(missing_ok=True)
    proc = start_driver(head, "batch", {"pool": pool, "items": items, "job_id": job_id,
                                        "started": f"{REMOTE_HOME}/{job_id}.started", **extra}, f"{job_id}.log")
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = head.home / f"{job_id}.log"
            raise HostError(f"the batch driver did not start: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.1)
    return proc


class Monitor:
    """The fleet's status sampled on the head every ``every_s`` (``head_driver.py monitor``) into
    ``~/<name>.jsonl``; :meth:`wait` polls those rows for one that matches."""

    def __init__(self, head: Host, name: str, every_s: float = 0.25):
        self.head, self.name = head, name
        self.path = head.home / f"{name}.jsonl"
        self.stop_file = head.home / f"{name}.stop"
        for p in (self.path, self.stop_file):
            p.unlink(missing_ok=True)
        self.proc = start_driver(head, "monitor", {"path": f"{REMOTE_HOME}/{name}.jsonl", "every_s": every_s,
                                                   "stop": f"{REMOTE_HOME}/{name}.stop", "max_s": 1800},
                                 f"{name}.log")

    def rows(self, after: float = 0.0) -> list[dict[str, Any]]:
        out = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the line being written
            if row["t"] >= after and "pools" in row:
                out.append(row)
        return out

    def wait(self, ok, after: float = 0.0, timeout_s: float = 180) -> dict[str, Any]:
        """The first row sampled at or after ``after`` (wall clock) with ``ok(row)``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = next((r for r in self.rows(after) if ok(r)), None)
            if hit is not None:
                return hit
            time.sleep(0.25)
        raise AssertionError(f"no status row matched within {timeout_s}s; last: {self.rows(after)[-1:]}")

    def close(self) -> None:
        self.stop_file.write_text("")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_spawned(self.proc)


def until(ok, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    """Poll ``ok()`` until it is true; an AssertionError saying ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (after {timeout_s}s)")
        time.sleep(interval_s)


def slots(row: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    return row["pools"].get(pool, {}).get("slots", [])


def all_running(pool: str, n: int, off: str | None = None):
    """A row predicate: ``pool`` has ``n`` slots, all running on a known node (not at ``off``)."""
    def ok(row: dict[str, Any]) -> bool:
        s = slots(row, pool)
        return len(s) == n and all(x["state"] == "running" and x["ip"] and x["ip"] != off for x in s)
    return ok


def pool_ok(pool: str, n: int):
    running = all_running(pool, n)
    return lambda row: running(row) and row["pools"][pool]["state"] == "ok"


def holder(cluster: HostCluster, placed: list[dict[str, Any]]) -> Host:
    """The worker host holding most of ``placed`` (slot views with ``ip``)."""
    ips = [s["ip"] for s in placed]
    return max(cluster.workers, key=lambda w: ips.count(w.ip))
