"""The supervisor's CPU priority (actors/priority.py), in a child process so pytest's stays as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fleet_ray.actors.priority import ENV, wanted_nice

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    from fleet_ray.actors.priority import control_plane_priority
    os.nice(5)                                   # like a Ray worker, started at a higher niceness
    gate = threading.Event()
    t = threading.Thread(target=gate.wait)       # a thread that exists before the change (Ray's are)
    t.start()
    nice, problem = control_plane_priority(json.loads(sys.argv[1]))
    threads = {int(x): os.getpriority(os.PRIO_PROCESS, int(x)) for x in os.listdir("/proc/self/task")}
    gate.set()
    t.join()
    print(json.dumps({"nice": nice, "problem": problem, "threads": sorted(set(threads.values()))}))
    """
)


def _child(target):
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(target)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_every_thread_takes_the_asked_niceness():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(19, base + 8)  # raising a nice value needs no privilege
    got = _child(target)
    assert got == {"nice": target, "problem": None, "threads": [target]}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_lowering_the_niceness_works_with_privilege_and_is_reported_without():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    got = _child(base)  # back from base + 5 to base: a lower nice value
    if os.geteuid() == 0:
        assert got == {"nice": base, "problem": None, "threads": [base]}
    else:  # pragma: no cover - CI runs as root
        assert got["nice"] == base + 5 and "can't set nice" in got["problem"]


def test_off_leaves_the_niceness_alone():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert _child(None) == {"nice": base + 5, "problem": None, "threads": [base + 5]}


@pytest.mark.parametrize(("raw", "want"), [(None, 0), ("0", 0), ("-5", -5), ("off", None), ("OFF", None),
                                           ("40", 19), ("-99", -20), ("high", 0)])
def test_the_env_setting(monkeypatch, raw, want):
    if raw is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, raw)
    assert wanted_nice() == want
