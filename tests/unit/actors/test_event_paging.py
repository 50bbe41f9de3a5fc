"""GET /events?since=0 used to parse the whole durable log (about 2 s a request at the 100,000 cap):
the supervisor's journal now hands the query's filters and limit to the log's own query."""

from __future__ import annotations

import asyncio

from fleet_ray.actors.supervisor_events import EventJournal
from fleet_ray.actors.supervisor_records import StoreRecords
from fleet_ray.actors.supervisor_store import StoreGateway
from fleet_ray.api.supervisor import EventQuery
from fleet_ray.observe.envelope import Event
from fleet_ray.observe.events import EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.testing import FakeClock, FlakyStore


async def _inline(fn, *args):
    return fn(*args)


def setup(n: int = 3000):
    clock = FakeClock()
    store = FlakyStore()
    log = EventLog(store)
    hlc = HLC(clock.ms)
    events = []
    for i in range(n):
        ts = hlc.tick()
        events.append(Event(kind="slot.ready" if i % 3 else "slot.died", physical=ts.physical, counter=ts.counter,
                            origin="supervisor", pool="a" if i % 2 else "b", slot=f"{'a' if i % 2 else 'b'}:0",
                            generation=1, message=f"event {i}"))
        clock.advance(0.001)
    log.append(events)
    records = StoreRecords(StoreGateway("memory://", "test", opener=lambda url, ns: store), to_thread=_inline)
    journal = EventJournal(HLC(clock.ms), clock=clock, monotonic=clock)
    return journal, records, events


def parsed_count(monkeypatch) -> list[int]:
    count = [0]
    original = Event.model_validate.__func__

    def counting(cls, *a, **kw):
        count[0] += 1
        return original(cls, *a, **kw)

    monkeypatch.setattr(Event, "model_validate", classmethod(counting))
    return count


def test_a_page_from_since_zero_reads_only_what_it_returns(monkeypatch):
    journal, records, events = setup()
    count = parsed_count(monkeypatch)
    page = asyncio.run(journal.query(EventQuery(since_ms=0, limit=5), records.read_log))
    assert page.source == "log"
    assert [e.id for e in page.events] == [e.id for e in events[:5]]
    assert count[0] <= 5  # not the whole log


def test_filters_go_into_the_log_query_and_paging_walks_on(monkeypatch):
    journal, records, events = setup()
    want = [e for e in events if e.pool == "b" and e.kind == "slot.died"]
    count = parsed_count(monkeypatch)
    first = asyncio.run(journal.query(EventQuery(since_ms=0, pool="b", kinds=["slot.died"], limit=4),
                                      records.read_log))
    assert [e.id for e in first.events] == [e.id for e in want[:4]]
    assert count[0] < 100  # stopped after the fourth match (each is about every sixth event)
    nxt = asyncio.run(journal.query(EventQuery(since_ms=0, pool="b", kinds=["slot.died"], limit=4,
                                               after=first.cursor), records.read_log))
    assert [e.id for e in nxt.events] == [e.id for e in want[4:8]]


def test_unsaved_events_still_merge_into_a_log_page():
    journal, records, events = setup(10)
    journal.lifecycle("pool.applied", "a", "new")  # in memory only, not yet in the log
    page = asyncio.run(journal.query(EventQuery(since_ms=0, limit=100), records.read_log))
    assert [e.kind for e in page.events][-1] == "pool.applied" and len(page.events) == 11


def test_the_store_is_read_a_page_at_a_time(monkeypatch):
    journal, records, events = setup()
    store = records.gateway.store or records.gateway._open("memory://", "test")
    read = [0]
    original = store.log_range

    def counting(log, start=None, end=None, limit=None):
        out = original(log, start, end, limit)
        read[0] += len(out)
        return out

    monkeypatch.setattr(store, "log_range", counting)
    page = asyncio.run(journal.query(EventQuery(since_ms=0, limit=5), records.read_log))
    assert len(page.events) == 5 and read[0] <= 600  # one page of the 3,000, not all of them


def test_paging_yields_every_entry_once_even_when_many_share_a_sort_key(monkeypatch):
    from fleet_ray.observe import events as events_module
    from fleet_ray.store import keys
    from fleet_ray.store.base import LogEntry

    monkeypatch.setattr(events_module, "READ_PAGE", 3)
    store = FlakyStore()
    entries = [LogEntry(f"a{i}", "k1", b"{}") for i in range(7)] + [LogEntry(f"b{i}", f"k{i + 2}", b"{}")
                                                                    for i in range(5)]
    store.log_append(keys.EVENT_LOG, entries)
    got = list(EventLog(store)._paged(keys.EVENT_LOG, None, None))
    assert [e.id for e in got] == [e.id for e in sorted(entries, key=lambda e: (e.sort_key, e.id))]
