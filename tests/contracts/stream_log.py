"""The stream-log contract: every backend of the durable streams' write-ahead copy must pass these.

Each test takes a ``stream_log`` fixture; ``tests/unit/store/test_stream_log_contract.py`` runs it on
the in-memory and SQLite backends, ``tests/integration/test_stream_log_contract.py`` on Redis.
"""

from __future__ import annotations

from fleet_ray.store.stream_log import GroupPosition, StoredBatch, StreamWrite

__all__ = [
    "test_batches_come_back_in_order_with_producers_and_counters",
    "test_a_retried_write_adds_nothing_twice",
    "test_group_positions_are_kept_replaced_and_dropped",
    "test_trimming_keeps_the_next_index_and_forgetting_drops_producers",
    "test_streams_are_separate_and_drop_forgets_one",
]


def b(index: int, producer: str = "p", seq: int | None = None, n: int = 2) -> StoredBatch:
    return StoredBatch(index, producer, index if seq is None else seq, n, f"[{index},{index}]".encode())


def test_batches_come_back_in_order_with_producers_and_counters(stream_log):
    assert stream_log.load("s").batches == [] and stream_log.load("s").next_index == 0
    stream_log.write("s", StreamWrite(batches=[b(0, "p", 0), b(1, "q", 0)]))
    stream_log.write("s", StreamWrite(batches=[b(2, "p", 1, n=5)]))
    snap = stream_log.load("s")
    assert [(x.index, x.producer, x.seq, x.n) for x in snap.batches] == [(0, "p", 0, 2), (1, "q", 0, 2), (2, "p", 1, 5)]
    assert snap.batches[2].payload == b"[2,2]"
    assert snap.next_index == 3 and snap.items_in == 9
    assert snap.producers == {"p": 1, "q": 0}


def test_a_retried_write_adds_nothing_twice(stream_log):
    change = StreamWrite(batches=[b(0), b(1)])
    stream_log.write("s", change)
    stream_log.write("s", change)
    stream_log.write("s", StreamWrite(batches=[b(1), b(2)]))  # half new
    snap = stream_log.load("s")
    assert [x.index for x in snap.batches] == [0, 1, 2] and snap.items_in == 6 and snap.next_index == 3
    assert snap.producers == {"p": 2}


def test_group_positions_are_kept_replaced_and_dropped(stream_log):
    stream_log.write("s", StreamWrite(batches=[b(0), b(1), b(2)],
                                      groups={"a": GroupPosition(2, [0]), "b": GroupPosition(0, [], durable=False)}))
    snap = stream_log.load("s")
    assert snap.groups["a"] == GroupPosition(2, [0], True) and snap.groups["a"].low() == 0
    assert snap.groups["b"] == GroupPosition(0, [], False)
    stream_log.write("s", StreamWrite(groups={"a": GroupPosition(3, []), "b": None}))
    assert stream_log.load("s").groups == {"a": GroupPosition(3, [], True)}


def test_trimming_keeps_the_next_index_and_forgetting_drops_producers(stream_log):
    stream_log.write("s", StreamWrite(batches=[b(i) for i in range(5)]))
    stream_log.write("s", StreamWrite(trim_below=3))
    snap = stream_log.load("s")
    assert [x.index for x in snap.batches] == [3, 4] and snap.next_index == 5 and snap.items_in == 10
    stream_log.write("s", StreamWrite(trim_below=5))
    stream_log.write("s", StreamWrite(batches=[b(5, "q", 0)], forget=["p"]))
    snap = stream_log.load("s")
    assert [x.index for x in snap.batches] == [5] and snap.producers == {"q": 0} and snap.next_index == 6


def test_streams_are_separate_and_drop_forgets_one(stream_log):
    stream_log.write("s", StreamWrite(batches=[b(0)], groups={"g": GroupPosition(1)}))
    stream_log.write("t", StreamWrite(batches=[b(0), b(1)]))
    stream_log.drop("s")
    assert stream_log.load("s").batches == [] and stream_log.load("s").groups == {}
    assert stream_log.load("s").next_index == 0
    assert [x.index for x in stream_log.load("t").batches] == [0, 1]
    stream_log.drop("t")
