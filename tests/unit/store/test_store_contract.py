"""The store contract (tests/contracts/store.py) on the in-memory store and the embedded SQLite store."""

from __future__ import annotations

import uuid

import pytest

from fleet_ray.store import open_store
from tests.contracts.store import *  # noqa: F403  (the shared contract suite)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        s = open_store("memory://")
    else:
        s = open_store(f"sqlite://{tmp_path}/s.db", namespace=uuid.uuid4().hex[:8])
    yield s
    s.close()
