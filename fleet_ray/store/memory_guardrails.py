"""Guardrail state in one process (beside :mod:`~fleet_ray.store.memory`): the thread executor, unit tests.

Runs :class:`~fleet_ray.store.guardrails.KVGuardrails` over a dict behind a lock; values are copied
in and out through JSON, as a real store would, and keys with a TTL lapse by the injected clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fleet_ray.store.guardrails import KV, KVGuardrails


class MemoryGuardrails(KVGuardrails):
    """In one process only: for the thread executor and unit tests."""

    url = "memory://"

    def __init__(self, clock: Callable[[], float] | None = None):
        super().__init__(clock)
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[KV]:
        with self._lock:
            yield _MemKV(self._data, self._clock())


class _MemKV:
    def __init__(self, data: dict[str, tuple[Any, float | None]], now: float):
        self.data = data
        self.now = now

    def get(self, key: str) -> Any:
        item = self.data.get(key)
        if item is None or (item[1] is not None and item[1] <= self.now):
            return None
        return json.loads(json.dumps(item[0]))  # copy, like a real store

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self.data[key] = (json.loads(json.dumps(value)), None if ttl_s is None else self.now + ttl_s)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix) and self.get(k) is not None]
