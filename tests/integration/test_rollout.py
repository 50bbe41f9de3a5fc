"""Automation packages shipped through Ray runtime envs, and rolling upgrades with health gates."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from fleet_ray.errors import SpecError
from fleet_ray.spec.packages import publish
from fleet_ray.store import open_store

from .conftest import make_cluster

SETUP_OK = "pass"
SETUP_BROKEN = "raise RuntimeError('v1.2.0 cannot start: missing credentials')"


def make_project(root: Path, version: str, setup: str = SETUP_OK, importable: bool = True) -> Path:
    proj = root / f"proj-{version}"
    pkg = proj / "src" / "rollout_demo"
    pkg.mkdir(parents=True)
    (proj / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "rollout-demo"
        version = "{version}"
        [project.entry-points."fleet_ray.automations"]
        "rollout.demo" = "rollout_demo:Demo"
        [tool.setuptools.packages.find]
        where = ["src"]
    """))
    (pkg / "__init__.py").write_text(textwrap.dedent(f"""
        import asyncio
        from fleet_ray import BatchAutomation
        {"" if importable else "import a_module_that_does_not_exist"}

        class Demo(BatchAutomation):
            async def setup(self):
                {setup}

            async def process(self, item):
                await asyncio.sleep(0.005)
                return {{"item": item, "version": "{version}"}}
    """))
    return proj


@pytest.fixture(scope="module")
def cluster():
    """Rollouts need no tagged nodes: a head and one worker keep this module light."""
    import ray

    cluster, nodes = make_cluster(workers=[{"num_cpus": 2}])
    cluster.worker_nodes_list = nodes
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def published(fleet, tmp_path):
    store = open_store(fleet.store_url, fleet.namespace)
    for version, setup, importable in [("1.0.0", SETUP_OK, True), ("1.1.0", SETUP_OK, True),
                                       ("1.2.0", SETUP_BROKEN, True), ("1.3.0", SETUP_OK, False)]:
        assert publish(store, make_project(tmp_path, version, setup, importable)) == ("rollout-demo", version)
    return fleet


def pool(name: str, version: str, slots: int = 2, **extra) -> dict:
    spec = {"name": name, "automation": "rollout.demo", "package": f"rollout-demo=={version}", "slots": slots,
            "concurrency": 4, "health": {"period_s": 0.2}, "recycle": {"drain_timeout_s": 20}}
    spec.update(extra)
    return spec


def test_two_versions_run_side_by_side(published):
    fleet = published
    fleet.apply({"pools": [pool("old", "1.0.0"), pool("new", "1.1.0")]})
    st = fleet.wait_ready(120)
    assert {s.version for s in st.pool("old").slots} == {"1.0.0"}
    assert {s.version for s in st.pool("new").slots} == {"1.1.0"}
    assert {r.value["version"] for r in fleet.map("old", range(20), timeout_s=60)} == {"1.0.0"}
    assert {r.value["version"] for r in fleet.map("new", range(20), timeout_s=60)} == {"1.1.0"}


def test_unimportable_version_is_rejected_and_the_old_one_keeps_running(published):
    fleet = published
    fleet.apply({"pools": [pool("r", "1.0.0")]})
    before = fleet.wait_ready(120)
    with pytest.raises(SpecError, match=r"pools\.r\.automation: .*rollout-demo==1\.3\.0.*a_module_that_does_not_exist"):
        fleet.apply({"pools": [pool("r", "1.3.0")]})
    with pytest.raises(SpecError, match=r"pools\.r\.package: .*never published"):
        fleet.apply({"pools": [pool("r", "9.9.9")]})
    st = fleet.status()
    assert [(s.generation, s.version) for s in st.pool("r").slots] == [(s.generation, s.version) for s in before.pool("r").slots]
    assert st.pool("r").rollout is None


def test_rolling_upgrade_under_load_loses_and_repeats_nothing(published):
    fleet = published
    fleet.apply({"pools": [pool("r", "1.0.0", slots=4)]})
    fleet.wait_ready(120)
    jobs, done = [], threading.Event()

    def producer():  # keep work flowing for the whole rollout, and a little after
        extra = 3
        while extra:
            jobs.append(fleet.submit("r", list(range(200))))
            if done.is_set():
                extra -= 1
            time.sleep(0.2)

    feeder = threading.Thread(target=producer)
    feeder.start()
    fleet.wait_until(lambda s: sum(x.tasks for x in s.pool("r").slots) >= 400, 60)
    fleet.apply({"pools": [pool("r", "1.1.0", slots=4)]})
    try:
        st = fleet.wait_until(lambda s: s.pool("r").rollout is not None
                              and s.pool("r").rollout.state == "complete", 240)
    finally:
        done.set()
        feeder.join(60)
    results = {job.id: job.wait(timeout_s=300) for job in jobs}
    assert {s.version for s in st.pool("r").slots} == {"1.1.0"}
    assert st.pool("r").rollout.updated == 4 and st.pool("r").rollout.to_version is None
    for job_id, rs in results.items():  # every item of every job exactly once, all ok
        assert sorted(int(r.item_id) for r in rs) == list(range(200)), job_id
        assert all(r.ok for r in rs)
    versions = [r.value["version"] for rs in results.values() for r in rs]
    assert {"1.0.0", "1.1.0"} <= set(versions)  # served by both versions while rolling
    kinds = [e.kind for e in st.events if e.pool == "r"]
    assert "rollout.started" in kinds and "rollout.completed" in kinds
    assert max(s.generation for s in st.pool("r").slots) == 2  # each position replaced once


def test_broken_version_is_rolled_back_automatically(published):
    fleet = published
    fleet.apply({"pools": [pool("r", "1.0.0", slots=3)]})
    fleet.wait_ready(120)
    fleet.apply({"pools": [pool("r", "1.2.0", slots=3, rollout={"failure_threshold": 2},
                                heal={"backoff_base_s": 0.1})]})
    st = fleet.wait_until(lambda s: s.pool("r").rollout.state == "rolled_back"
                          and s.pool("r").counts.get("running") == 3
                          and all(x.version == "1.0.0" for x in s.pool("r").slots), 240)
    ro = st.pool("r").rollout
    assert ro.failures >= 2 and "missing credentials" in ro.reason
    assert any(e.kind == "rollout.rolled_back" for e in st.events)
    assert {r.value["version"] for r in fleet.map("r", range(10), timeout_s=60)} == {"1.0.0"}
    # two of three positions never stopped serving the old version
    assert sorted(s.generation for s in st.pool("r").slots)[:2] == [1, 1]


def test_rollout_can_be_paused_resumed_and_rolled_back(published):
    fleet = published
    fleet.apply({"pools": [pool("r", "1.0.0", slots=3)]})
    fleet.wait_ready(120)
    fleet.apply({"pools": [pool("r", "1.1.0", slots=3)]})
    fleet.pause_rollout("r")
    st = fleet.wait_until(lambda s: s.pool("r").rollout.state == "paused" and s.pool("r").counts.get("running") == 3, 120)
    # the replacement already under way when paused finishes; no further position is touched
    st = fleet.wait_until(lambda s: s.steps > st.steps + 30, 30)
    assert sum(x.version == "1.1.0" for x in st.pool("r").slots) <= 1
    assert st.pool("r").rollout.updated <= 1 and st.pool("r").rollout.state == "paused"
    assert sorted(x.generation for x in st.pool("r").slots)[:2] == [1, 1]
    fleet.resume_rollout("r")
    fleet.wait_until(lambda s: s.pool("r").rollout.state == "complete", 240)
    # and a manual rollback after completion is refused (nothing in progress), while one mid-way works
    with pytest.raises(Exception, match="no rollout in progress"):
        fleet.rollback("r")
    fleet.apply({"pools": [pool("r", "1.0.0", slots=3)]})
    fleet.rollback("r")
    st = fleet.wait_until(lambda s: s.pool("r").rollout.state == "rolled_back"
                          and s.pool("r").counts.get("running") == 3
                          and all(x.version == "1.1.0" for x in s.pool("r").slots), 240)
    assert st.pool("r").rollout.reason == "rolled back by operator"
