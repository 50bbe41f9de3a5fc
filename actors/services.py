"""The supervisor's side of streams, events, the crash bridge and grouped errors.

:class:`FleetServices` is one of the parts :class:`~fleet_ray.actors.supervisor_core.SupervisorCore`
wires (it gets the fleet's state, the event journal, the store gateway and the slot calls) and runs
one background loop next to the reconcile loop; the reconcile step only tells it, without blocking,
that a slot died or was killed. It:

- creates each declared output stream's hub at apply time and registers every wired consumer
  pool as a durable consumer group (so a consumer sees every item from the start); polls the
  hubs' stats once a second for :meth:`FleetServices.streams_state` and turns new back-pressure episodes into
  ``stream.backpressure`` events; re-registers groups when a hub restarted;
- keeps a long poll open on every hub (``watch``, as for slots): when it fails the hub died; Ray
  restarts a killed hub, and one that is gone for good is made again with its options. Either way
  a durable hub rebuilds itself from the store (:mod:`fleet_ray.store.stream_log`);
- remembers the sinks it started in the store and, after a head restart, starts them again;
- hands the stream leases of a dead or killed consumer slot back to its group;
- completes the crash bridge: reads what the slot wrote (:mod:`fleet_ray.observe.crashes`), fills in the
  death, appends the one record per generation, emits ``slot.crashed``; at start it sweeps slot
  contexts left by slots that died while no supervisor watched;
- takes the slots' events (``ingest``): merges their HLC timestamps (clamped to wall + max skew),
  adds them to the event log, and groups ``task.failed`` and crashes into error groups that the
  notifier reports;
- derives ``slot.healed`` when a position that failed is running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from fleet_ray.api.supervisor import NotifierState, NotifierSummary, SinkStarted, StreamInfo, StreamState
from fleet_ray.control.state import FleetState
from fleet_ray.errors import StreamError
from fleet_ray.names import HUB_PREFIX, SINK_PREFIX, hub_name, sink_name, slot_actor_name
from fleet_ray.observe.crashes import merge_crash, read_slot_context, record_crash
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.grouping import ErrorGroup, ErrorGrouper, FailureRecord, cause_signature
from fleet_ray.observe.kinds import SlotCrashed, SlotHealed, StreamBackpressure, TypedEvent
from fleet_ray.observe.notify import NotifyConfig, Reporter, config_from_env
from fleet_ray.spec.models import validate_spec
from fleet_ray.store import keys
from fleet_ray.streams.declare import StreamOptions, declared, model_path

from .stream_hub import ensure_hub, get_hub
from .stream_sink import start_sink
from .supervisor_events import EventJournal
from .supervisor_store import StoreGateway

log = logging.getLogger(__name__)

TICK_S = 0.25
STATS_EVERY_S = 1.0
REBUILD_S = 24 * 3600
WATCH_RETRY_S = 1.0


def _failure_of(ev: Event) -> FailureRecord | None:
    """The failure a ``task.failed`` or ``slot.crashed`` event reports (for error groups)."""
    d = ev.data
    if ev.kind == "task.failed":
        return FailureRecord(kind="task", error_type=d.get("error_type") or "?", frame=d.get("frame") or "?",
                             message=d.get("error", ""), pool=ev.pool, slot=ev.slot, phase=d.get("phase"),
                             task=d.get("task"), at=ev.physical / 1000)
    if ev.kind == "slot.crashed":
        return FailureRecord(kind="crash", error_type=d.get("error_type") or "SlotDied",
                             frame=d.get("frame") or cause_signature(d.get("cause", "")), message=ev.message,
                             pool=ev.pool, slot=ev.slot, phase=d.get("phase"), task=d.get("task"),
                             at=ev.physical / 1000)
    return None


@dataclass
class StreamEntry:
    name: str
    pool: str
    output: str
    model: str
    options: StreamOptions
    hub: Any
    consumers: set[str] = field(default_factory=set)
    incarnation: str | None = None
    watch: Any = None  # the long poll on the hub (fails when it dies)
    watch_at: float = 0.0


class FleetServices:
    def __init__(self, namespace: str, state: FleetState, journal: EventJournal, gateway: StoreGateway,
                 calls: Any, notify: NotifyConfig | None = None):
        self.namespace, self.state, self.journal, self.gateway, self.calls = namespace, state, journal, gateway, calls
        self.streams: dict[str, StreamEntry] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._episodes: dict[str, int] = {}
        self.errors = ErrorGrouper()
        if notify is None:
            try:
                notify = config_from_env()
            except ValueError as exc:
                log.warning("FLEET_NOTIFY_* settings are invalid, notifications are off: %s", exc)
                notify = NotifyConfig()
        self.reporter = Reporter(notify, fleet=state.fleet_name)
        self._gone: list[tuple] = []
        self._failing: dict[str, int] = {}
        self._last_event_id: str | None = None
        self._stats_at = 0.0
        self._booted = False

    # -- hooks the reconcile step calls (never blocking) -------------------------------------------
    def spec_applied(self, spec: Any, resolved: dict[str, Any]) -> None:
        wanted: dict[str, StreamEntry] = {}
        for pool in spec.pools:
            r = resolved.get(pool.name)
            cls = getattr(r, "automation_cls", None)
            if cls is None:
                continue
            for output, model in declared(cls, "outputs").items():
                name = f"{pool.name}.{output}"
                opts = pool.streams.get(output) or StreamOptions()
                old = self.streams.get(name)
                hub = old.hub if old is not None else ensure_hub(
                    self.namespace, name, opts.capacity, opts.max_bytes, model_path(model),
                    store_url=self.gateway.url, durable=opts.durable)
                if old is not None and old.options != opts:
                    hub.set_limits.remote(opts.capacity, opts.max_bytes)
                wanted[name] = StreamEntry(name, pool.name, output, model_path(model), opts, hub,
                                           incarnation=old.incarnation if old else None,
                                           watch=old.watch if old else None)
        for pool in spec.pools:
            for ref in pool.inputs.values():
                if ref not in wanted:  # its producer was resolved elsewhere (a packaged pool): declarations unknown
                    src, output = ref.rsplit(".", 1)
                    old = self.streams.get(ref)
                    hub = old.hub if old is not None else ensure_hub(self.namespace, ref, store_url=self.gateway.url)
                    wanted[ref] = StreamEntry(ref, src, output, old.model if old else "", StreamOptions(), hub,
                                              incarnation=old.incarnation if old else None,
                                              watch=old.watch if old else None)
                wanted[ref].consumers.add(pool.name)
        for name, entry in wanted.items():
            old = self.streams.get(name)
            for group in entry.consumers - (old.consumers if old else set()):
                entry.hub.add_group.remote(group, True, "earliest")
            for group in (old.consumers if old else set()) - entry.consumers:
                entry.hub.drop_group.remote(group)
        for name in set(self.streams) - set(wanted):  # its producing pool (or output) is gone
            with contextlib.suppress(Exception):
                ray.kill(self.streams[name].hub, no_restart=True)
        self.streams = wanted

    def slot_gone(self, key: tuple[str, int], generation: int, cause: str, died: bool) -> None:
        """A slot generation died (``died``) or was killed: hand back its stream leases and queue
        the crash bridge's check (done off the step, in :meth:`tick`)."""

        rec = self.state.table.get(key)
        seen = {"pid": rec.pid, "node_id": rec.node_id, "phase": rec.phase} if rec is not None else {}
        self._gone.append((key, generation, cause, died, seen))
        pool = self.state.desired.get(key[0])
        consumer = slot_actor_name(key[0], key[1], generation)
        for ref in (pool.inputs.values() if pool is not None else ()):
            entry = self.streams.get(ref)
            if entry is not None:
                entry.hub.release.remote(key[0], consumer)

    # -- the background loop -----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("fleet services tick failed; continuing")
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        if not self.state.recovered:
            return
        if not self._booted:
            await self._boot()
        if self._gone:
            await self._bridge_crashes()
        self._derive_events()
        await self._watch_hubs()
        if time.monotonic() - self._stats_at >= STATS_EVERY_S:
            self._stats_at = time.monotonic()
            await self._poll_stats()

    async def _boot(self) -> None:
        if not self.streams and self.state.spec.pools:  # a restarted supervisor: find the streams again
            try:
                spec, resolved = await asyncio.to_thread(validate_spec, self.state.spec)
                self.spec_applied(spec, resolved)
            except Exception as exc:
                log.warning("can't re-resolve the spec's streams: %s", exc)
        leftovers = await asyncio.to_thread(self.gateway.call, lambda s: s.keys(keys.SLOT_CONTEXT_PREFIX))
        if leftovers is None:
            return  # store down: try again next tick
        await self._rebuild_groups()
        await self._restart_sinks()
        for k in leftovers:
            _, pool, index, gen = k.split(":")
            key, generation = (pool, int(index)), int(gen[1:])
            rec = self.state.table.get(key)
            if rec is not None and rec.generation == generation and self.calls.handle(key) is not None:
                continue  # alive
            self._gone.append((key, generation, "the slot was gone when the supervisor started", True, {}))
        self._booted = True

    async def _rebuild_groups(self) -> None:
        """After a restart: the last day's failures from the event log, as already-notified groups."""
        since = int((time.time() - REBUILD_S) * 1000)
        found = await asyncio.to_thread(
            self.gateway.call, lambda s: EventLog(s).query(kinds=["task.failed", "slot.crashed"], since_ms=since))
        for ev in found or []:
            rec = _failure_of(ev)
            if rec is not None:
                self.reporter.seed(self.errors.add(rec)[0])

    async def _bridge_crashes(self) -> None:
        batch, self._gone = self._gone, []

        def work(store: Any) -> list:
            out = []
            for key, gen, cause, died, seen in batch:
                ctx = read_slot_context(store, key[0], key[1], gen)
                rec = merge_crash(key[0], key[1], gen, ctx, died, cause, seen, run=self.state.run_id)
                if rec is None:
                    if ctx is not None:
                        store.delete(keys.slot_context(key[0], key[1], gen))
                    continue
                out.append((rec, record_crash(store, rec)))
            return out

        done = await asyncio.to_thread(self.gateway.call, work)
        if done is None:
            self._gone = batch + self._gone  # store down: retry later
            return
        for rec, new in done:
            if not new:
                continue  # already recorded (both paths, or a restarted supervisor): report once
            self.emit(SlotCrashed, pool=rec.pool, slot=rec.slot, generation=rec.generation,
                      message=rec.cause[:500], crash_id=rec.id, task=rec.task, phase=rec.phase,
                      cause=rec.cause[:2000], error_type=rec.error_type, frame=rec.frame, sources=rec.sources)
            self.failure(rec.failure())

    def failure(self, rec: FailureRecord) -> None:
        group, _new = self.errors.add(rec)
        self.reporter.report(group)

    # -- events ------------------------------------------------------------------------------------
    def emit(self, cls: type[TypedEvent], **fields: Any) -> Event:
        return self.journal.emit(cls, **fields)

    def ingest(self, events: list[dict[str, Any]]) -> int:
        """Events from slots: merged into the supervisor's clock and log; failures grouped."""
        for raw in events:
            ev = self.journal.ingest(Event.model_validate(raw))
            rec = _failure_of(ev) if ev.kind == "task.failed" else None
            if rec is not None:
                self.failure(rec)
        return len(events)

    def _derive_events(self) -> None:
        recent = list(self.journal.recent)
        fresh: list[Event] = []
        for ev in reversed(recent):
            if ev.id == self._last_event_id:
                break
            fresh.append(ev)
        if recent:
            self._last_event_id = recent[-1].id
        for ev in reversed(fresh):
            if ev.origin != "supervisor" or not ev.slot:
                continue
            if ev.kind == "slot.recycled" and ev.data.get("failure"):
                self._failing[ev.slot] = self._failing.get(ev.slot, 0) + 1
            elif ev.kind == "slot.ready" and ev.slot in self._failing:
                self.emit(SlotHealed, pool=ev.pool, slot=ev.slot, generation=ev.generation,
                          failures=self._failing.pop(ev.slot), message="running again after failures")

    # -- streams -----------------------------------------------------------------------------------
    async def _watch_hubs(self) -> None:
        """Keep a long poll on every hub; a failed one means the hub died: find it again by name (Ray
        restarts a killed hub) or, if it is gone for good, make it again with its options."""
        watched = [e for e in self.streams.values() if e.watch is not None]
        if watched:
            done, _ = ray.wait([e.watch for e in watched], num_returns=len(watched), timeout=0)
            finished = set(done)
            for entry in watched:
                if entry.watch not in finished:
                    continue
                try:
                    ray.get(entry.watch, timeout=0)  # the poll ran out: the hub is alive
                except Exception as exc:
                    await self._hub_died(entry, exc)
                entry.watch = None
        now = time.monotonic()
        for entry in self.streams.values():
            if entry.watch is None and now >= entry.watch_at:
                entry.watch_at = now + WATCH_RETRY_S
                entry.watch = entry.hub.watch.options(max_task_retries=0).remote()

    async def _hub_died(self, entry: StreamEntry, exc: BaseException) -> None:
        found = await asyncio.to_thread(get_hub, self.namespace, entry.name)
        opts = entry.options
        if found is not None:  # restarted by Ray, or made again by a slot: it rebuilt from the store
            entry.hub = found
            found.set_limits.remote(opts.capacity, opts.max_bytes, entry.model or None)  # a reader made it bare
            return
        log.warning("stream hub %s is gone (%s); making it again", entry.name, type(exc).__name__)
        entry.hub = await asyncio.to_thread(
            ensure_hub, self.namespace, entry.name, opts.capacity, opts.max_bytes, entry.model or None,
            self.gateway.url, opts.durable)
        for group in entry.consumers:
            entry.hub.add_group.remote(group, True, "earliest")

    async def _restart_sinks(self) -> None:
        """After a head restart: start the sinks this fleet had started (their specs are in the store)."""
        def read(store: Any) -> dict[str, bytes]:
            return {k: v for k in store.keys(keys.STREAM_SINK_PREFIX) if (v := store.get(k)) is not None}

        found = await asyncio.to_thread(self.gateway.call, read)
        for key, raw in (found or {}).items():
            stream, _, name = key[len(keys.STREAM_SINK_PREFIX):].partition(":")
            if stream not in self.streams:
                continue
            try:
                start_sink(self.namespace, stream, name, json.loads(raw))
            except Exception as exc:
                log.warning("can't start sink %s of %s again: %s", name, stream, exc)

    async def _poll_stats(self) -> None:
        entries = list(self.streams.values())
        if not entries:
            return
        replies = await asyncio.gather(*(asyncio.wait_for(e.hub.stats.remote(), 2.0) for e in entries),
                                       return_exceptions=True)
        for entry, st in zip(entries, replies, strict=True):
            if isinstance(st, BaseException):
                continue  # the hub is restarting or slow: keep the last stats
            self.stats[entry.name] = st
            if entry.incarnation is not None and st["incarnation"] != entry.incarnation:
                for group in entry.consumers:  # the hub restarted empty: its groups are gone
                    entry.hub.add_group.remote(group, True, "earliest")
            entry.incarnation = st["incarnation"]
            entry.model = entry.model or st.get("model") or ""  # a packaged producer tells its model to the hub
            if st["backpressure_episodes"] > self._episodes.get(entry.name, 0):
                self.emit(StreamBackpressure, pool=entry.pool, stream=entry.name, depth=st["depth"],
                          capacity=st["capacity"], blocked_producers=st["blocked_producers"],
                          message=f"stream {entry.name} full ({st['depth']}/{st['capacity']}): producers wait")
            self._episodes[entry.name] = st["backpressure_episodes"]

    def streams_state(self) -> list[StreamState]:
        """Every stream: where it comes from and goes, and the hub's latest stats."""
        out = []
        for name, entry in sorted(self.streams.items()):
            st = self.stats.get(name)
            got = st or {}
            out.append(StreamState(
                name=name,
                producer_pool=entry.pool,
                consumer_pools=sorted(entry.consumers),
                depth=int(got.get("depth", 0)),
                capacity=entry.options.capacity,
                in_rate=float(got.get("in_rate", 0.0)),
                out_rate=float(got.get("out_rate", 0.0)),
                items_emitted=int(got.get("items_in", 0)),
                producers=[entry.pool],
                consumers=sorted(set(entry.consumers) | set(got.get("groups", {}))),
                hub=st,
            ))
        return out

    def stream_info(self, stream: str) -> StreamInfo:
        """Where a driver finds a stream: its hub actor's name and the model's import path."""
        entry = self.streams.get(stream)
        if entry is None:
            raise StreamError(f"no stream {stream!r} (streams: {sorted(self.streams) or 'none'})")
        return StreamInfo(stream=stream, hub=hub_name(stream), model=entry.model, pool=entry.pool,
                          consumers=sorted(entry.consumers), options=entry.options.model_dump())

    async def add_sink(self, stream: str, spec: dict[str, Any], name: str) -> SinkStarted:
        """Start a sink actor copying ``stream``; its consumer group exists when this returns."""
        self.stream_info(stream)
        await self.streams[stream].hub.add_group.remote(f"sink:{name}", True, "earliest")
        raw = json.dumps(spec).encode()
        await asyncio.to_thread(self.gateway.call, lambda s: s.put(keys.stream_sink(stream, name), raw))
        start_sink(self.namespace, stream, name, spec)
        return SinkStarted(stream=stream, sink=sink_name(stream, name), group=f"sink:{name}")

    # -- grouped errors and notifiers --------------------------------------------------------------
    def error_groups(self, pool: str | None = None, since: float | None = None) -> list[ErrorGroup]:
        return self.errors.groups(pool=pool, since=since)

    def configure_notifiers(self, config: dict[str, Any]) -> NotifierSummary:
        cfg = NotifyConfig.model_validate(config)
        self.reporter.close()
        self.reporter = Reporter(cfg, fleet=self.state.fleet_name)
        return NotifierSummary(**cfg.summary())

    def notifier_state(self) -> NotifierState:
        rep = self.reporter
        return NotifierState(config=NotifierSummary(**rep.config.summary()),
                             sent=[n.model_dump(mode="json") for n in rep.sent], failures=rep.failures)

    def shutdown(self) -> None:
        """Kill every hub and sink actor of the fleet; stop the notifier."""
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry.get("name", "")
            if entry.get("namespace") == self.namespace and name.startswith((HUB_PREFIX, SINK_PREFIX)):
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=True)
        self.streams.clear()
        self.reporter.close()
