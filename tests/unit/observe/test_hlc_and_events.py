from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC, HLCTimestamp
from fleet_ray.testing import FakeClock, MemoryStore


def test_hlc_ticks_monotonically_even_when_the_wall_clock_goes_back():
    clock = FakeClock(1000.0)
    hlc = HLC(clock.ms)
    a = hlc.tick()
    clock.advance(-5)
    b = hlc.tick()
    assert b > a and b.physical == a.physical and b.counter == a.counter + 1
    clock.advance(10)
    c = hlc.tick()
    assert c.physical == clock.ms() and c.counter == 0


def test_hlc_merge_clamps_a_peer_far_in_the_future():
    clock = FakeClock(1000.0)
    hlc = HLC(clock.ms, max_skew_ms=60_000)
    merged = hlc.merge(HLCTimestamp(clock.ms() + 10**12, 5))
    assert merged.physical == clock.ms() + 60_000
    ahead = hlc.merge(HLCTimestamp(clock.ms() + 1000, 7))
    assert ahead > merged


def test_event_log_is_idempotent_and_causally_ordered():
    log = EventLog(MemoryStore(), max_len=3)
    e1 = Event(kind="slot.ready", physical=2, counter=0, pool="a")
    e0 = Event(kind="slot.started", physical=1, counter=5, pool="a")
    e2 = Event(kind="slot.died", physical=2, counter=1, pool="b")
    assert log.append([e1, e0]) == 2
    assert log.append([e1, e2]) == 1
    assert [e.kind for e in log.query()] == ["slot.started", "slot.ready", "slot.died"]
    assert [e.kind for e in log.query(pool="a")] == ["slot.started", "slot.ready"]
    assert [e.kind for e in log.query(since_ms=2)] == ["slot.ready", "slot.died"]
    log.append([Event(kind="x", physical=3, counter=0)])
    assert [e.kind for e in log.query()] == ["slot.ready", "slot.died", "x"]  # capped at 3
