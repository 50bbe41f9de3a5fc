"""Batch slots with ``concurrency_bounds`` on a real Ray cluster: each slot samples its host and moves
how many items it works on at once.

Two pools in one fleet on one machine, with limits chosen so the outcome doesn't depend on what else
the machine runs: ``calm``'s limits can't be crossed (CPU and memory at 100%, an event-loop lag of
5 s), so a busy slot grows a step per interval to its max, and an idle one holds; ``tight``'s
``max_memory_ratio`` of 1% is below what any host uses, so its slot yields a step per interval to its
min. Each change is a ``slot.concurrency`` event, status shows the slot's value and why, the items it
works on at once follow it, and every item gets one result. A browser slot reads Chromium's memory
too: with every host limit out of reach and ``max_chromium_memory_ratio`` at 1% of
``browser.max_browser_rss_mb``, a real Chromium is what makes it yield.
"""

from __future__ import annotations

import pytest
import ray

from .conftest import fleet_on_embedded_store, wait_for

INTERVAL = {"interval_s": 0.3}
CALM = {"min": 1, "max": 4, "max_cpu_ratio": 1.0, "max_memory_ratio": 1.0, "max_event_loop_lag_s": 5.0,
        "grow_below": 1.0, **INTERVAL}
TIGHT = {"min": 1, "max": 4, "max_memory_ratio": 0.01, **INTERVAL}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=4, namespace="fleet-tests", include_dashboard=False,
             logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def fleet(local_ray, tmp_path):
    with fleet_on_embedded_store(tmp_path) as client:
        yield client


def pool(name: str, bounds: dict, **extra) -> dict:
    return {"name": name, "automation": "builtin.sleep", "config": {"delay_s": 0.4}, "slots": 1,
            "concurrency_bounds": bounds, "health": {"period_s": 0.3}, **extra}


def concurrency(status, name: str):
    [slot] = status.pool(name).slots
    return slot.concurrency


def changes(fleet, name: str) -> list[tuple[int, int, str]]:
    return [(e["data"]["from"], e["data"]["to"], e["data"]["reason"]) for e in fleet.events(limit=1000)
            if e["kind"] == "slot.concurrency" and e["pool"] == name]


def test_a_busy_slot_grows_toward_max_on_a_calm_host_and_yields_once_a_limit_is_crossed(fleet):
    fleet.apply({"pools": [pool("calm", CALM), pool("tight", TIGHT, concurrency=4)]})
    # idle: the calm slot decides, and holds (it doesn't use the one place it has)
    st = fleet.wait_until(lambda s: (c := concurrency(s, "calm")) is not None and c.reason == "using 0 of 1: holding",
                          60)
    c = concurrency(st, "calm")
    assert (c.current, c.min, c.max, c.changes) == (1, 1, 4, 0)
    assert set(c.pressure) >= {"cpu_ratio", "memory_ratio", "event_loop_lag_s", "in_flight"}

    calm, tight = fleet.submit("calm", list(range(60))), fleet.submit("tight", list(range(24)))
    # busy on a calm host: a step per interval up to max, and the slot then works on 4 items at once
    st = fleet.wait_until(lambda s: concurrency(s, "calm").current == 4 and concurrency(s, "calm").in_flight == 4, 120)
    assert concurrency(st, "calm").changes == 3
    # over a limit: a step per interval down to min, then it holds there, one item at a time
    st = fleet.wait_until(lambda s: concurrency(s, "tight").current == 1 and concurrency(s, "tight").in_flight == 1,
                          120)
    c = concurrency(st, "tight")
    assert c.changes == 3 and "memory" in c.reason and "over 1%: at min 1, holding" in c.reason

    grew = wait_for(lambda: len(found := changes(fleet, "calm")) == 3 and found, timeout_s=30)
    assert [(a, b) for a, b, _ in grew] == [(1, 2), (2, 3), (3, 4)]
    assert all("under limits" in why for _, _, why in grew)
    yielded = wait_for(lambda: len(found := changes(fleet, "tight")) == 3 and found, timeout_s=30)
    assert [(a, b) for a, b, _ in yielded] == [(4, 3), (3, 2), (2, 1)]
    assert all("memory" in why and "over 1%" in why for _, _, why in yielded)

    for job, n in ((calm, 60), (tight, 24)):  # nothing lost or done twice while the concurrency moved
        results = job.wait(timeout_s=120)
        assert sorted(int(r.item_id) for r in results if r.ok) == list(range(n))


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_a_browser_slot_yields_to_chromiums_memory(fleet, tmp_path):
    bounds = {**CALM, "max_chromium_memory_ratio": 0.01}
    fleet.apply({"pools": [{
        "name": "pages", "automation": "browser.page-info", "kind": "browser", "slots": 1, "concurrency": 3,
        "concurrency_bounds": bounds, "browser": {"max_browser_rss_mb": 1500,
                                                  "artifacts": {"logs_root": str(tmp_path / "logs")}},
        "health": {"period_s": 0.3, "timeout_s": 20, "failure_threshold": 5, "start_timeout_s": 240},
    }]})
    st = fleet.wait_until(lambda s: (c := concurrency(s, "pages")) is not None and c.current == 1, 300)
    c = concurrency(st, "pages")
    assert c.changes == 2 and "chromium memory" in c.reason and "over 1%" in c.reason
    assert 0.01 < c.pressure["chromium_memory_ratio"] < 1  # a real Chromium, measured against its budget
    yielded = wait_for(lambda: len(found := changes(fleet, "pages")) == 2 and found, timeout_s=30)
    assert [(a, b) for a, b, _ in yielded] == [(3, 2), (2, 1)]
