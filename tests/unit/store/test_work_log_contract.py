"""The work-log contract (tests/contracts/work_log.py) on the in-memory and the embedded SQLite work log."""

from __future__ import annotations

import uuid

import pytest

from fleet_ray.store import open_work_log
from tests.contracts.work_log import *  # noqa: F403  (the shared contract suite)


@pytest.fixture(params=["memory", "sqlite"])
def work_log(request, tmp_path):
    if request.param == "memory":
        w = open_work_log("memory://")
    else:
        w = open_work_log(f"sqlite://{tmp_path}/s.db", namespace=uuid.uuid4().hex[:8])
    yield w
    w.close()
