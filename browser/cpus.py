"""CPU shares: the browser slots on a host split its CPUs, each slot's processes confined to its share.

Left to the scheduler, Chromium's threads and renderers wander across every core, and on the
2-core VM this project is developed on that costs more than the pages do: two browser slots spent
1.19 core-seconds per page of ``bench.crawl``; with each slot's process tree (worker, Playwright
driver, Chromium) confined to its own core, 0.58, so the same two slots crawled 2× faster (one
Chromium with 8 pages in flight used 0.78). Cross-core cache and TLB traffic of a JIT-heavy,
many-threaded program is the likely cause; the figure is what matters, and ``cpu_pinning: off``
turns this off.

How the split works:

- A slot joins a host-wide table (``<browser root>/cpu-shares.json``, under an ``flock``) with its
  owner token (worker pid + start time, as the reaper uses), before it launches Chromium.
- Its share is computed from the live members in join order (a member whose process is gone is
  dropped by whoever reads next): with ``n`` slots and ``m`` CPUs, ``n <= m`` gives each slot a
  contiguous block of ``m // n`` or more; ``n > m`` gives slot ``i`` CPU ``i mod m``.
- The CPUs split are those the slot's worker was allowed when it started (the raylet's cpuset, so
  a container's or a ``taskset``'s limit is respected).
- Every thread of every process of the slot's tree gets the share (``sched_setaffinity`` per
  thread; processes and threads started later inherit it). The slot re-reads its share on each
  health check, so the shares re-balance as slots come and go.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import psutil

from fleet_ray.private_files import private_file, read_nofollow, write_private

from .reaper import owner_alive, private_root

log = logging.getLogger(__name__)

TABLE = "cpu-shares.json"


def split(cpus: list[int], members: int, index: int) -> list[int]:
    """The share of member ``index`` of ``members`` of the sorted CPU list ``cpus``."""
    if not cpus:
        return []
    if members <= 0 or not 0 <= index < members:
        raise ValueError(f"member {index} of {members}")
    m = len(cpus)
    if members > m:
        return [cpus[index % m]]
    return cpus[index * m // members : (index + 1) * m // members]


def set_tree_affinity(procs: list[psutil.Process], cpus: list[int]) -> int:
    """Confine every thread of ``procs`` to ``cpus``; returns how many threads were set."""
    mask = set(cpus)
    n = 0
    for p in procs:
        try:
            tids = [t.id for t in p.threads()]
        except psutil.Error:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, mask)
                n += 1
            except (ProcessLookupError, PermissionError):
                continue  # the thread ended meanwhile
    return n


class CpuShare:
    """One slot's membership of the host's CPU table (see the module's docstring)."""

    def __init__(self, root: Path, owner: str, cpus: list[int] | None = None):
        self.root = Path(root)
        self.owner = owner
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.current: list[int] | None = None
        self.members = 0
        self.problem: str | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        # the table lives in the browser root, private to this user (checked, never through a symlink)
        root = private_root(self.root)
        lock_path = private_file(root / (TABLE + ".lock"))
        with open(os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = root / TABLE
            try:
                table = json.loads(read_nofollow(path))
                if not isinstance(table.get("members"), dict):
                    raise ValueError("no members")
            except (OSError, ValueError, AttributeError):
                table = {"next": 0, "members": {}}
            before = json.dumps(table, sort_keys=True)
            table["members"] = {o: seq for o, seq in table["members"].items() if o == self.owner or owner_alive(o)}
            yield table
            if json.dumps(table, sort_keys=True) != before:
                write_private(path, json.dumps(table))

    def share(self) -> list[int]:
        """This slot's share; joins the table first if it is not a member (its first call, or the
        table was lost), so it is safe to call on every health check."""
        with self._locked() as table:
            if self.owner not in table["members"]:
                table["members"][self.owner] = table["next"]
                table["next"] += 1
            order = sorted(table["members"], key=lambda o: (table["members"][o], o))
            self.members = len(order)
            return split(self.cpus, len(order), order.index(self.owner))

    def leave(self) -> None:
        with contextlib.suppress(OSError), self._locked() as table:
            table["members"].pop(self.owner, None)

    def apply(self, procs: list[psutil.Process]) -> list[int]:
        """Read this slot's share and confine ``procs`` (every thread) to it; returns the share.

        A failure is kept in ``problem`` (and logged once), never raised: pinning is an
        optimisation, a slot that cannot pin keeps serving.
        """
        try:
            cpus = self.share()
            set_tree_affinity(procs, cpus)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if self.problem is None:
                log.warning("could not pin the slot's processes to its CPU share: %s", exc)
            self.problem = f"{type(exc).__name__}: {exc}"
            return self.current or []
        if cpus != self.current:
            log.info("slot %s runs on CPUs %s (%d browser slot(s) on this host)", self.owner, cpus, self.members)
        self.current, self.problem = cpus, None
        return cpus

    def snapshot(self) -> dict:
        return {"cpus": self.current, "host_cpus": len(self.cpus), "browser_slots": self.members,
                "problem": self.problem}
