"""CPU shares of browser slots: the split, the host-wide table with real processes, per-thread pinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from fleet_ray.browser.cpus import TABLE, CpuShare, split
from fleet_ray.browser.reaper import ProcessTag, _ctime_token

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")


def test_split_gives_disjoint_blocks_covering_every_cpu_then_round_robin():
    cpus = list(range(16))
    for n in range(1, 17):
        shares = [split(cpus, n, i) for i in range(n)]
        assert sorted(c for s in shares for c in s) == cpus, n
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert all(s == list(range(s[0], s[-1] + 1)) for s in shares)  # contiguous
    assert split([0, 1, 2, 3, 4, 5, 6, 7], 3, 2) == [5, 6, 7]
    # more slots than CPUs: one CPU each, shared round robin
    assert [split([2, 3], 5, i) for i in range(5)] == [[2], [3], [2], [3], [2]]
    assert split([], 3, 1) == []
    with pytest.raises(ValueError):
        split([0, 1], 2, 2)


@pytest.fixture
def sleeper():
    procs = []

    def start() -> psutil.Process:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        procs.append(p)
        return psutil.Process(p.pid)

    yield start
    for p in procs:
        p.kill()
        p.wait()


def owner_of(proc: psutil.Process, index: int) -> str:
    """The owner token of a slot whose worker is ``proc`` (pid + start time, as ProcessTag makes it)."""
    return f"p{proc.pid}-t{_ctime_token(proc)}-ns-crawl-{index}-g1"


def test_slots_split_the_host_and_a_dead_slots_cpus_go_back_to_the_others(tmp_path, sleeper):
    cpus = [0, 1, 2, 3]
    a = CpuShare(tmp_path, ProcessTag.for_slot("ns", "crawl", 0, 1, root=tmp_path).owner, cpus)
    other = sleeper()
    b = CpuShare(tmp_path, owner_of(other, 1), cpus)
    assert a.share() == [0, 1, 2, 3]
    assert b.share() == [2, 3]
    assert a.share() == [0, 1] and a.members == 2  # asking again keeps a's place: no second membership
    third = sleeper()
    c = CpuShare(tmp_path, owner_of(third, 2), cpus)
    assert c.share() == [2, 3] and b.share() == [1]  # join order: a, b, c
    # c's process dies without leaving: the next reader drops it and b gets its CPUs back
    third.kill()
    third.wait(10)
    assert b.share() == [2, 3]
    assert set(json.loads((tmp_path / TABLE).read_text())["members"]) == {a.owner, b.owner}
    b.leave()
    assert a.share() == cpus
    # a lost or corrupt table: members join again in the order they next read it
    (tmp_path / TABLE).write_text("{not json")
    assert a.share() == cpus and a.members == 1


def test_apply_pins_every_thread_and_later_threads_inherit(tmp_path):
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, threading, time\n"
         "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
         "print('ready', flush=True); sys.stdin.readline()\n"
         "t = threading.Thread(target=time.sleep, args=(60,), daemon=True); t.start()\n"
         "print(t.native_id, flush=True); time.sleep(60)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        proc = psutil.Process(child.pid)
        assert len(proc.threads()) == 4
        share = CpuShare(tmp_path, ProcessTag.for_slot("ns", "crawl", 0, 1, root=tmp_path).owner, [cpu])
        assert share.apply([proc]) == [cpu]
        assert all(os.sched_getaffinity(t.id) == {cpu} for t in proc.threads())
        child.stdin.write("go\n")
        child.stdin.flush()
        late = int(child.stdout.readline())
        assert os.sched_getaffinity(late) == {cpu}
        assert share.snapshot() == {"cpus": [cpu], "host_cpus": 1, "browser_slots": 1, "problem": None}
    finally:
        child.kill()
        child.wait()


def test_a_share_that_cannot_be_applied_is_reported_not_raised(tmp_path):
    share = CpuShare(tmp_path, ProcessTag.for_slot("ns", "crawl", 0, 1, root=tmp_path).owner, [4095])
    before = os.sched_getaffinity(0)
    assert share.apply([psutil.Process()]) == []
    assert "Error" in share.snapshot()["problem"] and share.snapshot()["cpus"] is None
    assert os.sched_getaffinity(0) == before
