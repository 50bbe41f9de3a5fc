"""Resumable runs on a real cluster: SIGKILL the driver mid-run, start the same run again, and only
the unfinished items are processed, no output is duplicated, and the skipped ones are reported."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import wait_for
from .stream_fixtures import single_node_cluster

N = 40


@pytest.fixture(scope="module")
def cluster():
    import ray

    cluster = single_node_cluster({"http": 8})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


DRIVER = textwrap.dedent("""
    import json, sys
    import ray
    from fleet_ray.client.fleet import FleetClient, SUPERVISOR_NAME

    address, namespace, run_id = sys.argv[1:4]
    ray.init(address=address, namespace=namespace, logging_level="WARNING", log_to_driver=False)
    fleet = FleetClient(ray.get_actor(SUPERVISOR_NAME, namespace=namespace), namespace)
    items = list(range(int(sys.argv[4])))
    report = fleet.run("probe", items, run_id=run_id, ids=[f"item-{i}" for i in items], timeout_s=600)
    print(json.dumps(report.model_dump()))
""")


def test_a_run_resumed_after_its_driver_was_sigkilled_processes_only_the_rest(fleet, cluster, tmp_path):
    import ray

    log = tmp_path / "processed.log"
    fleet.apply({"pools": [{"name": "probe", "automation": "builtin.probe", "slots": 2, "concurrency": 2,
                            "config": {"delay_s": 0.25, "log_path": str(log)}, "health": {"period_s": 0.5},
                            "placement": {"resources": {"http": 1}}}]})
    fleet.wait_ready(120)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address, fleet.namespace, "prices-1", str(N)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        done_before = wait_for(lambda: len(ray.get(fleet.supervisor.run_state.remote("prices-1")).ok) >= 8
                               or driver.poll() is not None, 180)
        assert done_before is True and driver.poll() is None, driver.stderr.read().decode()[-2000:]
        driver.kill()  # SIGKILL, mid-run
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    ids = [f"item-{i}" for i in range(N)]
    report = fleet.run("probe", list(range(N)), run_id="prices-1", ids=ids, timeout_s=300)
    assert report.skipped >= 8 and report.skipped + report.adopted + report.submitted == N
    assert report.failed == 0 and report.done == report.adopted + report.submitted
    processed = collections.Counter(log.read_text().split())
    assert set(processed) == {str(i) for i in range(N)} and set(processed.values()) == {1}  # each item once
    results = ray.get(fleet.supervisor.run_results.remote("prices-1"))
    assert sorted(r.item_id for r in results) == sorted(ids) and all(r.ok for r in results)
    assert {r.item_id: r.value["item"] for r in results} == {f"item-{i}": i for i in range(N)}
    resumed = [e for e in fleet.events(500) if e["kind"] == "run.resumed"]
    assert resumed and resumed[-1]["data"]["skipped"] == report.skipped
    # once more: everything is done, nothing is processed again
    again = fleet.run("probe", list(range(N)), run_id="prices-1", ids=ids, timeout_s=60)
    assert (again.skipped, again.adopted, again.submitted, again.done) == (N, 0, 0, 0)
    assert sum(collections.Counter(log.read_text().split()).values()) == N


def test_a_fresh_run_reports_its_results_once_and_nothing_skipped(fleet, tmp_path):
    fleet.apply({"pools": [{"name": "probe", "automation": "builtin.probe", "slots": 1, "concurrency": 4,
                            "config": {"fail_on": [3]}, "health": {"period_s": 0.5},
                            "placement": {"resources": {"http": 1}}}]})
    fleet.wait_ready(120)
    run = fleet.submit("probe", list(range(6)), run_id="fresh")
    got = list(run.results(timeout_s=120))
    assert sorted(r.item_id for r in got) == [str(i) for i in range(6)]
    report = run.report()
    assert (report.skipped, report.submitted, report.done, report.failed) == (0, 6, 5, 1)
    assert json.loads(report.model_dump_json())["run_id"] == "fresh"
    # a failed item counts as finished: a rerun skips it unless asked to retry failures
    assert fleet.run("probe", list(range(6)), run_id="fresh", timeout_s=60).skipped == 6


def test_a_run_carries_on_through_a_supervisor_sigkill(fleet, tmp_path):
    import threading

    import ray

    from .conftest import sigkill

    log = tmp_path / "processed.log"
    fleet.apply({"pools": [{"name": "probe", "automation": "builtin.probe", "slots": 2, "concurrency": 2,
                            "config": {"delay_s": 0.2, "log_path": str(log)}, "health": {"period_s": 0.5},
                            "placement": {"resources": {"http": 1}}}]})
    fleet.wait_ready(120)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault(
        "report", fleet.run("probe", list(range(N)), run_id="through", timeout_s=300)), daemon=True)
    runner.start()
    wait_for(lambda: len(ray.get(fleet.supervisor.run_state.remote("through")).ok) >= 6, 120)
    sup_pid = ray.get(fleet.supervisor.ping.remote())
    sigkill(sup_pid)  # Ray restarts it; the driver's calls to it are retried; the work queue lives on
    runner.join(300)
    report = out["report"]
    assert (report.skipped, report.submitted, report.done, report.failed) == (0, N, N, 0)
    assert ray.get(fleet.supervisor.ping.remote()) != sup_pid
    processed = collections.Counter(log.read_text().split())
    assert len(processed) == N and set(processed.values()) == {1}
    assert len(ray.get(fleet.supervisor.run_results.remote("through"))) == N
