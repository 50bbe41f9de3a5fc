"""Questions the supervisor answers from the store, off its event loop: crash records, resumable-run
ledgers and campaign breakers. Each runs its store work in a thread (``to_thread``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fleet_ray.api.models import BreakerOut
from fleet_ray.api.supervisor import EventQuery
from fleet_ray.client.runs import RunLedger, RunRecord, RunState
from fleet_ray.observe.crashes import CrashRecord, list_crashes
from fleet_ray.observe.events import EventLog
from fleet_ray.store import open_store
from fleet_ray.store.base import Store

from .supervisor_store import StoreGateway

T = TypeVar("T")


class StoreRecords:
    def __init__(self, gateway: StoreGateway, to_thread: Callable[..., Any] = asyncio.to_thread,
                 opener: Callable[[str, str], Store] = open_store):
        self.gateway, self.to_thread, self._open = gateway, to_thread, opener
        self._run_store: Store | None = None

    async def crashes(self, pool: str | None, limit: int) -> list[CrashRecord]:
        """One record per crashed slot generation, oldest first ([] while the store is down)."""
        return await self.to_thread(self.gateway.call, lambda s: list_crashes(s, pool, limit)) or []

    async def last_drained_slots(self, pool: str) -> int:
        """The slot count a pool had before its latest ``pool.drained`` event (0 if none or unknown)."""
        stored = await self.to_thread(self.gateway.call, lambda s: EventLog(s).query(kind="pool.drained", pool=pool))
        return int(stored[-1].data.get("previous_slots", 0)) if stored else 0

    async def read_log(self, q: EventQuery) -> list | None:
        """The oldest ``q.limit`` events of the durable log that match ``q`` (filters and limit go into
        the log's query, so a page from ``since=0`` doesn't parse the whole log); None if the store is down."""
        after = tuple(q.after) if q.after else None
        return await self.to_thread(self.gateway.call, lambda s: EventLog(s).query(
            kinds=q.kinds, pool=q.pool, slot=q.slot, since_ms=q.since_ms, until_ms=q.until_ms, after=after,
            limit=q.limit or None))

    # -- resumable runs (the run ledger; errors propagate to the caller) ---------------------------
    async def _ledger(self, run_id: str, fn: Callable[[RunLedger], T]) -> T:
        def work() -> T:
            if self._run_store is None:
                self._run_store = self._open(self.gateway.url, self.gateway.namespace)
            return fn(RunLedger(self._run_store, run_id))

        return await self.to_thread(work)

    async def run_state(self, run_id: str) -> RunState:
        return await self._ledger(run_id, lambda led: led.state())

    async def run_record(self, run_id: str, records: list[RunRecord]) -> int:
        return await self._ledger(run_id, lambda led: led.record(records))

    async def run_mark_submitted(self, run_id: str, ids: list[str], keep_first: int | None) -> int:
        return await self._ledger(run_id, lambda led: led.mark_submitted(ids, keep_first))

    async def run_results(self, run_id: str) -> list[RunRecord]:
        return await self._ledger(run_id, lambda led: led.results())

    # -- campaign breakers -------------------------------------------------------------------------
    async def breakers(self) -> list[BreakerOut]:
        from fleet_ray.campaign.operator import breaker_status  # campaigns are optional: loaded on first use

        states = await self.to_thread(breaker_status, self.gateway.url, self.gateway.namespace)
        return [BreakerOut(**{**s.model_dump(mode="json"), "reason": s.reason}) for s in states]

    async def reset_breaker(self, target: str, operator: str) -> BreakerOut:
        from fleet_ray.campaign.operator import reset_breaker

        before = await self.to_thread(reset_breaker, self.gateway.url, self.gateway.namespace, target, operator)
        return BreakerOut(**{**before.model_dump(mode="json"), "reason": before.reason})
