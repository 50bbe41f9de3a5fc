"""The stream-log contract (tests/contracts/stream_log.py) on a real Redis server, and what only Redis
does: the batches are a Redis Stream other tools can read, trimmed with XTRIM MINID."""

from __future__ import annotations

import uuid

import pytest

from fleet_ray.store import keys, open_stream_log
from fleet_ray.store.stream_log import StoredBatch, StreamWrite
from tests.contracts.stream_log import *  # noqa: F403  (the shared contract suite, run on Redis here)

from .conftest import REDIS_URL


@pytest.fixture
def stream_log():
    log = open_stream_log(REDIS_URL, namespace=uuid.uuid4().hex[:8])
    yield log
    for s in ("s", "t"):
        log.drop(s)
    log.close()


def test_batches_are_a_redis_stream_keyed_by_index(stream_log):
    stream_log.write("s", StreamWrite(batches=[StoredBatch(i, "p", i, 1, b"[%d]" % i) for i in range(4)]))
    stream_log.write("s", StreamWrite(trim_below=2))
    key = stream_log._prefix + keys.stream_batches("s")
    entries = stream_log._r.xrange(key)
    assert [e for e, _ in entries] == [b"2-1", b"3-1"]
    assert entries[0][1] == {b"p": b"p", b"s": b"2", b"n": b"1", b"d": b"[2]"}
    assert pytest.approx(stream_log._r.xlen(key)) == 2
