"""CPU priority of the fleet's control plane.

Ray starts every worker process at nice 15 (its ``worker_niceness``) so that busy workers yield to the
raylet and the GCS. The supervisor is a Ray worker too, so on a saturated node (say 200 slot processes
on 2 cores) it gets a 1/201 share of the CPU and its reconcile step, health-check deadlines and heal
latency stretch with the load it is meant to supervise. :func:`control_plane_priority` puts the calling
process back at the priority of Ray's own control plane (nice 0 by default, ``FLEET_SUPERVISOR_NICE``).

Lowering a nice value needs privilege (root, ``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` that allows it);
without it the process keeps Ray's niceness and the reason is logged and reported in status.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "FLEET_SUPERVISOR_NICE"


def wanted_nice() -> int | None:
    """The niceness asked for (``FLEET_SUPERVISOR_NICE``: an integer, or ``off`` to leave Ray's)."""
    raw = os.environ.get(ENV, "0").strip().lower()
    if raw in ("off", "none", ""):
        return None
    try:
        return max(-20, min(19, int(raw)))
    except ValueError:
        log.warning("%s=%r is not an integer or 'off'; using 0", ENV, raw)
        return 0


def current_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def control_plane_priority(nice: int | None) -> tuple[int, str | None]:
    """Run every thread of this process at ``nice``; returns (niceness now, why not, if it failed).

    On Linux a nice value belongs to a thread, and new threads inherit their creator's, so each
    existing thread (Ray's core-worker threads included) is changed.
    """
    if nice is None:
        return current_nice(), None
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the call applies to the whole process
        tids = [0]
    problem = None
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # a thread that just ended
            continue
        except OSError as exc:
            problem = f"can't set nice {nice} ({exc.strerror}); the supervisor keeps nice {current_nice()}"
            break
    if problem:
        log.warning("%s: give the supervisor's user CAP_SYS_NICE or an RLIMIT_NICE allowing it, or set %s=off",
                    problem, ENV)
    return current_nice(), problem
