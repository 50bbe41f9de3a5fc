"""A slot's concurrency governor over recorded readings, with a fake clock: no Ray, no psutil.

The slot actor samples its host every ``sample_every()`` seconds and hands the readings to the governor;
these tests play that part, the readings being what a busy, calm or overloaded host would give.
"""

from __future__ import annotations

import pytest

from fleet_ray.cli.render import render_status
from fleet_ray.control.autoscale import PressureSnapshot
from fleet_ray.control.concurrency import ConcurrencyGovernor, PressureWindow, cpu_busy_ratio
from fleet_ray.control.lifecycle import Died, HealthReport, Ready, SlotRecord, SlotState, finish_stop, observe
from fleet_ray.control.state import FleetState
from fleet_ray.control.status_view import SupervisorFacts, fleet_status
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.kinds import SlotConcurrencyChanged, typed
from fleet_ray.spec.models import FleetSpec, PoolSpec
from fleet_ray.spec.scaling import ConcurrencyBounds
from fleet_ray.testing import FakeClock

T0 = 1_700_000_000.0
CALM = {"cpu_ratio": 0.2, "memory_ratio": 0.3, "event_loop_lag_s": 0.001}


def bounds(**kw) -> ConcurrencyBounds:
    return ConcurrencyBounds(**{"min": 2, "max": 6, "interval_s": 2.0, **kw})


def run(gov: ConcurrencyGovernor, clock: FakeClock, seconds: float, **readings):
    """Sample ``readings`` every ``sample_every()`` for ``seconds``; the changes it made."""
    changes = []
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        clock.advance(gov.sample_every())
        change = gov.tick(clock.now, **readings)
        if change is not None:
            changes.append(change)
    return changes


def test_a_busy_slot_on_a_calm_host_grows_a_step_per_interval_up_to_max():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(), 2, clock.now)
    assert gov.sample_every() == pytest.approx(0.4)  # five readings per interval
    assert run(gov, clock, 1.6, in_flight=2, **CALM) == []  # no decision before interval_s
    changes = run(gov, clock, 20, in_flight=6, **CALM)  # it uses whatever it has
    assert [(c.previous, c.current) for c in changes] == [(2, 3), (3, 4), (4, 5), (5, 6)]
    assert "under limits: 2 → 3" in changes[0].reason and changes[0].direction == "up"
    assert gov.current == 6 and gov.reason == "at max 6: holding" and gov.changes == 4
    report = gov.report()
    assert (report["current"], report["min"], report["max"], report["changes"]) == (6, 2, 6, 4)
    assert report["changed_at"] == changes[-1].at and report["pressure"]["in_flight"] == 6


def test_a_slot_that_does_not_use_what_it_has_holds():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(), 4, clock.now)
    assert run(gov, clock, 10, in_flight=1, **CALM) == []
    assert gov.current == 4 and gov.reason == "using 1 of 4: holding"
    assert run(gov, clock, 10, in_flight=0, **CALM) == []  # idle never shrinks it either


def test_a_reading_over_its_limit_yields_a_step_per_interval_down_to_min():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(max_event_loop_lag_s=0.05), 6, clock.now)
    changes = run(gov, clock, 20, in_flight=6, cpu_ratio=0.2, memory_ratio=0.3, event_loop_lag_s=0.2)
    assert [(c.previous, c.current) for c in changes] == [(6, 5), (5, 4), (4, 3), (3, 2)]
    assert changes[0].reason == "event-loop lag 200 ms over 50 ms: 6 → 5" and changes[0].direction == "down"
    assert changes[0].readings() == {"cpu_ratio": 0.2, "memory_ratio": 0.3, "event_loop_lag_s": 0.2, "in_flight": 6}
    assert gov.current == 2 and gov.reason.endswith("at min 2, holding")


def test_the_decision_reads_the_intervals_average_not_one_spike():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(max_cpu_ratio=0.9, interval_s=1.0), 4, clock.now)
    for cpu in (0.2, 0.2, 0.2, 0.2):  # four calm readings...
        clock.advance(0.2)
        assert gov.tick(clock.now, cpu_ratio=cpu, in_flight=4) is None
    clock.advance(0.2)
    change = gov.tick(clock.now, cpu_ratio=1.0, in_flight=4)  # ...and one pegged: mean 0.36
    assert change is not None and change.current == 5 and change.pressure.cpu_ratio == pytest.approx(0.36)
    for _ in range(5):  # a whole interval over the limit
        clock.advance(0.2)
        change = gov.tick(clock.now, cpu_ratio=0.97, in_flight=5)
    assert change is not None and change.current == 4 and "cpu 97% over 90%" in change.reason


def test_chromium_memory_counts_like_any_other_pressure():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(), 3, clock.now)
    [change] = run(gov, clock, 2, in_flight=3, chromium_memory_ratio=0.95, **CALM)
    assert change.current == 2 and "chromium memory 95% over 80%" in change.reason
    assert gov.report()["pressure"]["chromium_memory_ratio"] == 0.95


def test_without_readings_it_holds_and_a_start_outside_the_bounds_is_brought_inside():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(), 50, clock.now)
    assert gov.current == 6 and "starting at 6" in gov.reason
    clock.advance(2)
    assert gov.decide(clock.now) is None and gov.reason == "no pressure readings: holding 6"
    assert gov.report()["pressure"] == {}


def test_the_window_averages_what_was_measured_and_forgets_at_each_decision():
    w = PressureWindow()
    w.add(cpu_ratio=0.5, event_loop_lag_s=None, in_flight=3)
    w.add(cpu_ratio=0.7, event_loop_lag_s=0.01, in_flight=4)
    snap = w.snapshot()
    assert snap == PressureSnapshot(cpu_ratio=pytest.approx(0.6), event_loop_lag_s=0.01, in_flight=4)
    assert snap.memory_ratio is None and w.samples == 2
    w.clear()
    assert w.snapshot() == PressureSnapshot() and w.samples == 0
    with pytest.raises(TypeError, match="unknown pressure reading"):
        w.add(gpu=0.5)


def test_host_cpu_is_the_busy_share_of_all_cpus_between_two_readings():
    before = {"user": 100.0, "system": 50.0, "idle": 800.0, "iowait": 50.0, "guest": 10.0, "guest_nice": 0.0}
    after = {"user": 160.0, "system": 70.0, "idle": 900.0, "iowait": 70.0, "guest": 20.0, "guest_nice": 0.0}
    # 200 s of CPU time passed (guest is inside user), 120 of them idle or waiting on I/O
    assert cpu_busy_ratio(before, after) == pytest.approx(80 / 200)
    assert cpu_busy_ratio(after, after) is None


def test_a_change_is_one_slot_concurrency_event_with_from_to_and_the_readings():
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(bounds(), 2, clock.now)
    [change, *_] = run(gov, clock, 2, in_flight=2, **CALM)
    ev = SlotConcurrencyChanged.stamp(HLC(), pool="web", slot="web:0", generation=1, from_=change.previous,
                                      to=change.current, reason=change.reason, **change.readings()).to_event()
    assert ev.kind == "slot.concurrency" and ev.data["from"] == 2 and ev.data["to"] == 3
    assert ev.data["event_loop_lag_s"] == 0.001 and ev.data["chromium_memory_ratio"] is None
    back = typed(ev)
    assert isinstance(back, SlotConcurrencyChanged) and back.from_ == 2 and back.in_flight == 2


def test_the_health_report_carries_the_slots_concurrency_to_status_and_the_cli():
    p = PoolSpec(name="web", automation="builtin.echo", slots=1,
                 concurrency_bounds={"min": 2, "max": 6, "interval_s": 2})
    st = FleetState(fleet_name="f")
    st.set_desired(FleetSpec(name="f", pools=[p]))
    rec = SlotRecord("web", 0, generation=1, state=SlotState.STARTING, created_at=0.0)
    st.table.add(rec)
    observe(st.table, Ready(rec.key, 1, pid=100, node_id="n1"), 0.0, p)
    clock = FakeClock(T0)
    gov = ConcurrencyGovernor(p.concurrency_bounds, p.concurrency, clock.now)
    run(gov, clock, 4, in_flight=6, **CALM)
    observe(st.table, HealthReport(rec.key, 1, ok=True, tasks=9, concurrency={**gov.report(), "in_flight": 4}), 1.0, p)
    out = fleet_status(st, [], SupervisorFacts("ns", 1, 0.0, "memory://"), 2.0)
    c = out.slot("web:0").concurrency
    assert (c.current, c.min, c.max, c.in_flight, c.changes) == (4, 2, 6, 4, 2)
    assert c.reason.endswith("under limits: 3 → 4") and c.pressure["event_loop_lag_s"] == 0.001
    assert "web:0 concurrency=4 (2..6) in_flight=4: cpu 20%" in render_status(out)

    observe(st.table, Died(rec.key, 1, "killed"), 3.0, p)
    finish_stop(st.table, rec.key, 3.0, p, failure=False)  # the position's next generation has no report yet
    assert st.table.get(rec.key).concurrency is None
    assert fleet_status(st, [], SupervisorFacts("ns", 1, 0.0, "memory://"), 4.0).slot("web:0").concurrency is None
