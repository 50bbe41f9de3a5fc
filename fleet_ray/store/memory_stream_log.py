"""The streams' write-ahead copy in one process (beside :mod:`~fleet_ray.store.memory`): unit tests.

A new hub core given the same :class:`MemoryStreamLog` rebuilds as a restarted hub would; values
are copied in and out, as a real store would.
"""

from __future__ import annotations

import copy
import threading

from fleet_ray.errors import StoreUnavailable
from fleet_ray.store.stream_log import StreamSnapshot, StreamWrite, apply_write


class MemoryStreamLog:
    url = "memory://"

    def __init__(self) -> None:
        self._streams: dict[str, StreamSnapshot] = {}
        self._lock = threading.Lock()
        self.writes = 0
        self.available = True  # tests flip this to simulate an outage

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable(self.url, "simulated outage")

    def write(self, stream: str, change: StreamWrite) -> None:
        self._check()
        with self._lock:
            apply_write(self._streams.setdefault(stream, StreamSnapshot()), copy.deepcopy(change))
            self.writes += 1

    def load(self, stream: str) -> StreamSnapshot:
        self._check()
        with self._lock:
            return copy.deepcopy(self._streams.get(stream) or StreamSnapshot())

    def drop(self, stream: str) -> None:
        with self._lock:
            self._streams.pop(stream, None)

    def close(self) -> None:
        pass
