"""The stream-log contract (tests/contracts/stream_log.py) on the in-memory and embedded SQLite backends."""

from __future__ import annotations

import uuid

import pytest

from fleet_ray.store import open_stream_log
from tests.contracts.stream_log import *  # noqa: F403  (the shared contract suite)


@pytest.fixture(params=["memory", "sqlite"])
def stream_log(request, tmp_path):
    url = "memory://" if request.param == "memory" else f"sqlite://{tmp_path}/s.db"
    log = open_stream_log(url, namespace=uuid.uuid4().hex[:8])
    yield log
    log.close()
