"""How the API reaches the fleet: the supervisor, found by name, never imported.

All Ray calls of the API live here (one thin wrapper, like the supervisor's ``SlotCalls``). Status is
cached for ``status_ttl_s`` with a single flight, so a burst of requests costs one supervisor call,
and refreshed in the background (stale-while-revalidate, at most ``MAX_STALE_S`` old) so a slow
supervisor doesn't stall readers; control calls drop the cache so the next read shows their effect.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import ray

from fleet_ray.api.models import ApplyResult, BreakerOut, MetricsSeries, NodeOut, RecycleResult
from fleet_ray.api.status import FleetStatus
from fleet_ray.api.supervisor import EventBatch, EventQuery, PoolTarget, StreamState
from fleet_ray.errors import FleetNotRunning
from fleet_ray.names import SUPERVISOR_NAME
from fleet_ray.observe.grouping import ErrorGroup
from fleet_ray.ray_boundary import ray_errors
from fleet_ray.redact import redact_json_bytes
from fleet_ray.spec.models import FleetSpec

from .auth import ApiConfig

MAX_STALE_S = 2.0  # oldest snapshot served while a fresh one is on its way


class SupervisorUnavailable(FleetNotRunning):
    """The supervisor did not answer (not running, restarting, or too slow)."""


class CachedStatus:
    """One status snapshot: the parsed dict, and its JSON body (plain and gzip)."""

    __slots__ = ("data", "body", "gzipped", "at")

    def __init__(self, data: dict[str, Any], at: float):
        self.data = data
        self.body = redact_json_bytes(json.dumps(data, separators=(",", ":")).encode())
        self.gzipped = gzip.compress(self.body, compresslevel=1) if len(self.body) > 1024 else None
        self.at = at
        # the parsed copy must match what is served
        if b"***@" in self.body:
            self.data = json.loads(self.body)


class Backend:
    def __init__(self, config: ApiConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self._handle: Any = None
        self._status: CachedStatus | None = None
        self._status_lock = asyncio.Lock()
        self._refresh: asyncio.Future | None = None

    # -- finding the supervisor ------------------------------------------------------------------
    def _supervisor(self) -> Any:
        if self._handle is None:

            try:
                self._handle = ray.get_actor(SUPERVISOR_NAME, namespace=self.config.namespace)
            except ValueError:
                raise SupervisorUnavailable(
                    f"no fleet supervisor in Ray namespace {self.config.namespace!r}; run `fleet-ray up`"
                ) from None
        return self._handle

    async def _call(self, send: Callable[[Any], Any]) -> Any:
        """``send(handle)`` makes one remote call; FleetErrors come back as themselves, Ray failures as
        :class:`SupervisorUnavailable`."""

        handle = self._supervisor()
        try:
            return await asyncio.wait_for(send(handle), timeout=self.config.call_timeout_s)
        except ray.exceptions.RayTaskError as exc:
            translated = ray_errors(exc)
            if translated is not exc:
                raise translated from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self._handle = None
            raise SupervisorUnavailable(f"the fleet supervisor is not reachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise SupervisorUnavailable(
                f"the fleet supervisor did not answer within {self.config.call_timeout_s:g}s"
            ) from None

    # -- questions (one typed method each; see fleet_ray.actors.supervisor) -------------------------
    async def ping(self) -> int:
        return await self._call(lambda h: h.ping.remote())

    async def is_ready(self) -> bool:
        return await self._call(lambda h: h.is_ready.remote())

    async def spec(self) -> FleetSpec:
        return await self._call(lambda h: h.spec.remote())

    async def events(self, query: EventQuery) -> EventBatch:
        return await self._call(lambda h: h.events.remote(query))

    async def error_groups(self, pool: str | None, since: float | None) -> list[ErrorGroup]:
        return await self._call(lambda h: h.error_groups.remote(pool, since))

    async def streams(self) -> list[StreamState]:
        return await self._call(lambda h: h.streams.remote())

    async def nodes(self) -> list[NodeOut]:
        return await self._call(lambda h: h.nodes.remote())

    async def metrics_series(self) -> MetricsSeries:
        return await self._call(lambda h: h.metrics_series.remote())

    async def breakers(self) -> list[BreakerOut]:
        return await self._call(lambda h: h.breakers.remote())

    # -- control (each drops the status cache) ------------------------------------------------------
    async def _control(self, send: Callable[[Any], Any]) -> Any:
        try:
            return await self._call(send)
        finally:
            self.invalidate()

    async def apply(self, spec: dict[str, Any]) -> ApplyResult:
        return await self._control(lambda h: h.apply.remote(spec))

    async def scale(self, pool: str, slots: int) -> ApplyResult:
        return await self._control(lambda h: h.scale.remote(pool, slots))

    async def set_paused(self, pool: str, paused: bool) -> ApplyResult:
        return await self._control(lambda h: h.set_paused.remote(pool, paused))

    async def drain(self, pool: str) -> PoolTarget:
        return await self._control(lambda h: h.drain.remote(pool))

    async def resume(self, pool: str, slots: int | None) -> PoolTarget:
        return await self._control(lambda h: h.resume.remote(pool, slots))

    async def recycle(self, slot_id: str) -> RecycleResult:
        return await self._control(lambda h: h.recycle.remote(slot_id))

    async def reset_breaker(self, target: str, operator: str) -> BreakerOut:
        return await self._control(lambda h: h.reset_breaker.remote(target, operator))

    # -- status (cached) -------------------------------------------------------------------------
    async def status(self) -> CachedStatus:
        """The latest snapshot if younger than ``status_ttl_s``; a stale one (younger than
        ``MAX_STALE_S``) is served at once while one fresh snapshot is fetched in the background, so
        a slow supervisor doesn't stall readers; otherwise wait for a fresh one."""
        ttl = self.config.status_ttl_s
        snap = self._status
        age = self.clock() - snap.at if snap is not None else None
        if age is not None and age < ttl:
            return snap
        if age is not None and age < max(ttl, MAX_STALE_S):
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._fetch_status())
                self._refresh.add_done_callback(lambda t: t.cancelled() or t.exception())
            return snap
        return await self._fetch_status()

    async def _fetch_status(self) -> CachedStatus:
        ttl = self.config.status_ttl_s
        async with self._status_lock:
            snap = self._status
            if snap is not None and self.clock() - snap.at < ttl:
                return snap
            status: FleetStatus = await self._call(lambda h: h.status.remote())
            snap = self._status = CachedStatus(status.model_dump(mode="json"), self.clock())
            return snap

    def invalidate(self) -> None:
        self._status = None
