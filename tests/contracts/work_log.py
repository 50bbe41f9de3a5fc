"""The work-log contract: every backend (in-memory, SQLite, Redis) must pass these.

Each test takes a ``work_log`` fixture (a fresh, empty namespace); ``tests/unit/store/test_work_log_contract.py``
runs them on memory and SQLite, ``tests/integration/test_durable_work.py`` on a real Redis server.
"""

from __future__ import annotations

from fleet_ray.store.work_log import WorkSnapshot, WorkWrite

__all__ = [
    "test_work_log_round_trip",
    "test_work_log_write_is_idempotent",
    "test_work_log_applies_drops_first_and_trims_after_results",
    "test_work_log_keeps_pools_apart_and_drops_one",
    "test_work_log_handles_many_keys_in_one_write",
]


def _first_write() -> WorkWrite:
    return WorkWrite(
        items={("j1", "a"): b"A", ("j1", "b"): b"B", ("j1", "c:with\x01odd"): b"C"},
        leases={("j1", "a"): b'{"lessee": "fleet:p:0:g1", "deadline": 1.0}'},
        results={"j1": {0: b"r0", 1: b"r1"}},
        jobs={"j1": b'{"total": 5}'},
    )


def _equal(a: WorkSnapshot, b: WorkSnapshot) -> bool:
    return (a.jobs, a.items, a.leases, a.results) == (b.jobs, b.items, b.leases, b.results)


def test_work_log_round_trip(work_log):
    assert _equal(work_log.load("p"), WorkSnapshot())
    work_log.write("p", _first_write())
    snap = work_log.load("p")
    assert snap.jobs == {"j1": b'{"total": 5}'}
    assert snap.items == {("j1", "a"): b"A", ("j1", "b"): b"B", ("j1", "c:with\x01odd"): b"C"}
    assert snap.leases == {("j1", "a"): b'{"lessee": "fleet:p:0:g1", "deadline": 1.0}'}
    assert snap.results == {"j1": {0: b"r0", 1: b"r1"}}
    # a lease ends with its item's result; another item is leased; the driver read result 0
    work_log.write("p", WorkWrite(items={("j1", "a"): None}, leases={("j1", "a"): None, ("j1", "b"): b"L"},
                                  results={"j1": {2: b"r2"}}, trims={"j1": 1}, jobs={"j1": b'{"total": 5, "x": 1}'}))
    snap = work_log.load("p")
    assert set(snap.items) == {("j1", "b"), ("j1", "c:with\x01odd")}
    assert snap.leases == {("j1", "b"): b"L"}
    assert snap.results == {"j1": {1: b"r1", 2: b"r2"}}
    assert snap.jobs == {"j1": b'{"total": 5, "x": 1}'}


def test_work_log_write_is_idempotent(work_log):
    change = _first_write()
    work_log.write("p", change)
    once = work_log.load("p")
    work_log.write("p", change)  # its reply was lost: sent again
    assert _equal(work_log.load("p"), once)
    trim = WorkWrite(results={"j1": {2: b"r2"}}, trims={"j1": 2})
    work_log.write("p", trim)
    work_log.write("p", trim)
    assert work_log.load("p").results == {"j1": {2: b"r2"}}


def test_work_log_applies_drops_first_and_trims_after_results(work_log):
    work_log.write("p", _first_write())
    # the job is dropped and submitted again under the same id in one write
    work_log.write("p", WorkWrite(dropped={"j1"}, items={("j1", "b"): None, ("j1", "c:with\x01odd"): None,
                                                          ("j1", "a"): b"A2"},
                                  leases={("j1", "a"): None}, results={"j1": {0: b"new0", 1: b"new1"}},
                                  trims={"j1": 1}, jobs={"j1": b"{}"}))
    snap = work_log.load("p")
    assert snap.jobs == {"j1": b"{}"} and snap.items == {("j1", "a"): b"A2"} and not snap.leases
    assert snap.results == {"j1": {1: b"new1"}}
    work_log.write("p", WorkWrite(dropped={"j1"}))
    snap = work_log.load("p")
    assert not snap.jobs and not snap.results and snap.items == {("j1", "a"): b"A2"}  # items are listed explicitly


def test_work_log_keeps_pools_apart_and_drops_one(work_log):
    work_log.write("p", _first_write())
    work_log.write("q", WorkWrite(items={("j1", "a"): b"Q"}, results={"j9": {0: b"q0"}}, jobs={"j9": b"{}"}))
    assert work_log.load("q").items == {("j1", "a"): b"Q"}
    assert work_log.load("p").items[("j1", "a")] == b"A"
    work_log.drop("p")
    assert _equal(work_log.load("p"), WorkSnapshot())
    assert work_log.load("q").results == {"j9": {0: b"q0"}}
    work_log.drop("q")


def test_work_log_handles_many_keys_in_one_write(work_log):
    n = 12_000
    work_log.write("p", WorkWrite(items={("j", str(i)): b"x" * 10 for i in range(n)},
                                  results={"j": {i: b"r" for i in range(n)}}, jobs={"j": b"{}"}))
    snap = work_log.load("p")
    assert len(snap.items) == n and len(snap.results["j"]) == n
    work_log.write("p", WorkWrite(items=dict.fromkeys(snap.items), trims={"j": n - 1}))
    snap = work_log.load("p")
    assert not snap.items and snap.results == {"j": {n - 1: b"r"}}
