"""The event log and the one event matcher.

:class:`~fleet_ray.observe.envelope.Event` (re-exported here) is the envelope every event travels in;
the typed model of each kind lives in :mod:`fleet_ray.observe.kinds` (``SlotDied``, ``TaskFailed``,
``StreamBackpressure``, ...). :class:`EventLog` takes either, dedupes by ``id``, answers queries in
causal (HLC) order by kind, origin, pool, slot and time range, caps its size (never trimming campaign
audit receipts, kept in a log of their own), and can be followed live
(:meth:`EventLog.follow`).

:func:`kind_matches` (exact kind or ``"slot.*"`` prefix) and :func:`matches` (kinds, pool, slot,
origin, time range, cursor) are the one definition of "this event matches the filters": the log,
the supervisor's in-memory queries and its long-poll all use them.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fleet_ray.observe.envelope import Event
from fleet_ray.observe.hlc import HLCTimestamp
from fleet_ray.observe.kinds import TypedEvent, typed
from fleet_ray.store import keys
from fleet_ray.store.base import LogEntry, Store

RECEIPT_ORIGIN = "campaign:"  # fleet_ray.campaign.audit.origin()
READ_PAGE = 500  # log entries read from the store at a time

__all__ = ["Event", "EventLog", "is_receipt", "kind_matches", "matches"]


def kind_matches(kind: str, kinds: Iterable[str]) -> bool:
    """Whether ``kind`` is one of ``kinds``, each an exact kind or a prefix ending in ``*`` (``"slot.*"``)."""
    return any(kind == k or (k.endswith("*") and kind.startswith(k[:-1])) for k in kinds)


def matches(
    ev: Event,
    *,
    kind: str | None = None,
    kinds: Iterable[str] | None = None,
    pool: str | None = None,
    slot: str | None = None,
    origin: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    after: tuple[int, int, str] | None = None,
) -> bool:
    """Whether an event passes every filter given (None, or no ``kinds``, leaves a filter out).

    ``since_ms`` is inclusive, ``until_ms`` exclusive; ``after`` is an exclusive cursor
    ``(physical, counter, id)`` (see :attr:`Event.position`)."""
    return (
        (kind is None or ev.kind == kind)
        and (not kinds or kind_matches(ev.kind, kinds))
        and (pool is None or ev.pool == pool)
        and (slot is None or ev.slot == slot)
        and (origin is None or ev.origin == origin)
        and (since_ms is None or ev.physical >= since_ms)
        and (until_ms is None or ev.physical < until_ms)
        and (after is None or ev.position > tuple(after))
    )


def is_receipt(ev: Event) -> bool:
    """A campaign's signed audit receipt (:mod:`fleet_ray.campaign.audit`): kept for good, never trimmed."""
    return ev.origin.startswith(RECEIPT_ORIGIN) and "receipt" in ev.data


class EventLog:
    """The durable event log on a :class:`Store` (query in causal order, optional size cap).

    It is two store logs read as one: campaigns' audit receipts in ``keys.AUDIT_LOG``, never trimmed
    (a trimmed receipt breaks the chain ``verify-audit`` checks), and every other event in
    ``keys.EVENT_LOG``, which the writers that pass ``max_len`` (the supervisor) cap."""

    def __init__(self, store: Store, max_len: int | None = 100_000):
        self.store = store
        self.max_len = max_len

    def append(self, events: list[Event | TypedEvent]) -> int:
        """Append events (generic or typed) not seen before; returns how many were new. Audit receipts
        (:func:`is_receipt`) go to their own log, which no cap trims; the cap trims the rest."""
        events = [e if isinstance(e, Event) else e.to_event() for e in events]
        receipts = [e.to_entry() for e in events if is_receipt(e)]
        others = [e.to_entry() for e in events if not is_receipt(e)]
        new = self.store.log_append(keys.AUDIT_LOG, receipts) if receipts else 0
        if others:
            added = self.store.log_append(keys.EVENT_LOG, others)
            if self.max_len is not None and added:
                self.store.log_trim(keys.EVENT_LOG, self.max_len)
            new += added
        return new

    def _entries(self, start: str | None, end: str | None) -> Iterator[LogEntry]:
        """Both logs' entries in ``[start, end)``, merged in (sort key, id) order, read a page at a time
        (a query that stops after ``limit`` matches reads no further than it needs)."""
        return heapq.merge(self._paged(keys.EVENT_LOG, start, end), self._paged(keys.AUDIT_LOG, start, end),
                           key=lambda e: (e.sort_key, e.id))

    def _paged(self, log: str, start: str | None, end: str | None) -> Iterator[LogEntry]:
        page, seen = READ_PAGE, set[str]()  # seen: ids already yielded at sort key ``start``
        while True:
            batch = self.store.log_range(log, start, end, limit=page)
            yield from (e for e in batch if not (e.sort_key == start and e.id in seen))
            if len(batch) < page:
                return
            last = batch[-1].sort_key
            if last == start:  # a whole page on one sort key: read a bigger one from the same place
                seen |= {e.id for e in batch}
                page *= 2
                continue
            start, seen = last, {e.id for e in batch if e.sort_key == last}

    def query(
        self,
        kind: str | None = None,
        pool: str | None = None,
        origin: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
        slot: str | None = None,
        kinds: list[str] | None = None,
        after: tuple[int, int, str] | None = None,
    ) -> list[Event]:
        """Matching events in causal (HLC) order. ``kinds`` match exactly or by prefix (``"slot.*"``);
        ``after`` is an exclusive cursor ``(physical, counter, id)`` (see :meth:`follow`)."""
        if after is not None:
            since_ms = after[0] if since_ms is None else max(since_ms, after[0])
        start = HLCTimestamp(since_ms, 0).key() if since_ms is not None else None
        end = HLCTimestamp(until_ms, 0).key() if until_ms is not None else None
        out = []
        for entry in self._entries(start, end):
            ev = Event.model_validate(json.loads(entry.data))
            # an empty-string filter means "any" here (the store's range already applied the times)
            if not matches(ev, kind=kind or None, kinds=kinds, pool=pool or None, slot=slot or None,
                           origin=origin or None, after=after):
                continue
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
        return out

    def query_typed(self, **filters: Any) -> list[TypedEvent | Event]:
        """Like :meth:`query`, each event as its kind's model (:func:`fleet_ray.observe.kinds.typed`)."""
        return [typed(e) for e in self.query(**filters)]

    def size(self) -> int:
        return self.store.log_len(keys.EVENT_LOG) + self.store.log_len(keys.AUDIT_LOG)

    def follow(
        self,
        after: tuple[int, int, str] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        sleep: Any = time.sleep,
        **filters: Any,
    ) -> Iterator[Event]:
        """Live tail: yield matching events appended after ``after`` (default: from now on), in
        causal order, polling every ``poll_s``, until ``timeout_s`` passes (None: forever)."""
        if after is None:
            after = (int(time.time() * 1000), 0, "")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            for ev in self.query(after=after, **filters):
                after = ev.position
                yield ev
            sleep(poll_s)

