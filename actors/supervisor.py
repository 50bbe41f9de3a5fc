"""The supervisor: a named, detached actor on the head node that reconciles pools of slot actors.

Its loop, every ``tick_s``: **observe** (poll outstanding slot calls, never blocking) → **decide**
(:func:`fleet_ray.control.reconcile.decide`, pure) → **act** (through :class:`~fleet_ray.actors.handles.SlotCalls`)
→ **checkpoint** (in the background, coalesced, to the store). If its process is killed, Ray restarts
it; it reloads the checkpoint, adopts the live slot actors by name, kills anything it does not own
and carries on with generations continuing. If the store can't be written it keeps running on its
in-memory state, reports itself degraded, and writes the latest checkpoint when the store is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray

from fleet_ray.api.status import BrowserSlotStatus, EventStatus, FleetStatus, PoolStatus, SlotStatus
from fleet_ray.control import rollout
from fleet_ray.control.lifecycle import (
    Died,
    HealthReport,
    LifecycleEvent,
    SlotRecord,
    SlotState,
    SlotTable,
    finish_stop,
    observe,
    parse_slot_id,
)
from fleet_ray.control.reconcile import (
    CheckHealth,
    Drain,
    Forget,
    Kill,
    MarkPending,
    NodeView,
    PushConfig,
    Start,
    decide,
    placement_problem,
)
from fleet_ray.control.rollout import Rollout
from fleet_ray.errors import FleetError, JobError, StoreError, UnknownPool, UnknownSlot
from fleet_ray.names import (
    HEAD_RESOURCE,
    hub_name,
    parse_slot_actor_name,
    sink_name,
    slot_actor_name,
    workqueue_name,
)
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.spec.models import FleetSpec, PoolSpec, ResolvedPool, validate_spec
from fleet_ray.store import keys, open_store
from fleet_ray.store.base import Store

from .handles import SlotCalls
from .metrics import record_step
from .priority import control_plane_priority, wanted_nice

log = logging.getLogger(__name__)

NODE_REFRESH_S = 1.0
PACKAGE_CACHE = Path.home() / ".fleet-ray" / "packages"
PACKAGE_RECHECK_S = 60.0  # re-upload a package's py_modules if Ray garbage-collected them
# health checks and their reports change nothing a restart needs but task counts: such changes are
# checkpointed at most this often (every other change is written on the next persist tick)
ROUTINE_CHECKPOINT_S = 5.0
STEP_WINDOW = 200  # status reports the median and p95 of the last this many reconcile steps


class SupervisorCore:
    def __init__(self, store_url: str, namespace: str, fleet_name: str = "fleet", tick_s: float = 0.1):
        self.namespace = namespace
        self.fleet_name = fleet_name
        self.tick_s = tick_s
        self.store_url = store_url
        self.store: Store | None = None
        self.store_degraded = False
        self.store_error: str | None = None
        # Set when a store call failed: what was written meanwhile (checkpoint, generations, events)
        # must be written again before the store counts as healthy (it may be a fresh, empty one).
        self._store_behind = False
        self.calls = SlotCalls(namespace, store_url)
        self.table = SlotTable()
        self.spec = FleetSpec(name=fleet_name)
        self.desired: dict[str, PoolSpec] = {}
        self.batch: dict[str, bool] = {}
        self.hlc = HLC()
        self.started = time.time()
        self.steps = 0
        self.last_step_ms = 0.0
        self.last_step_cpu_ms = 0.0
        self._step_ms: deque[float] = deque(maxlen=STEP_WINDOW)  # the last steps' wall times
        self.nice: int | None = None
        self.nice_problem: str | None = None
        self.recovered = False
        self._rng = random.Random()
        self._dirty = True
        self._routine_dirty = False
        self._checkpoint_at = 0.0
        self._pending_events: list[Event] = []
        self._recent: deque[Event] = deque(maxlen=200)
        self._nodes: list[NodeView] = []
        self._nodes_at = 0.0
        self._workqueues: dict[str, Any] = {}
        self.rollouts: dict[str, Rollout] = {}
        self._package_envs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task] = []

    # -- the loop ------------------------------------------------------------------------------
    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run()),
            loop.create_task(self._persist_loop()),
            loop.create_task(self._nodes_loop()),
            loop.create_task(self._svc().run()),  # streams, crash bridge, error groups (actors/services.py)
        ]

    async def _run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:
                log.exception("reconcile step failed; continuing")
            await asyncio.sleep(self.tick_s)

    def step(self, now: float | None = None) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        if not self.recovered:
            self._recover()
            if not self.recovered:
                return
        now = time.time() if now is None else now
        for obs in self.calls.poll(now):
            pool = self.desired.get(obs.key[0])
            jitter = self._rng.random() * (pool.health.jitter if pool else 0.1)
            self._record(observe(self.table, obs, now, pool, jitter))
            if isinstance(obs, Died):
                self._release_work(obs.key, obs.generation, obs.cause)
                self._svc().slot_gone(obs.key, obs.generation, obs.cause, died=True)
            if isinstance(obs, HealthReport) and obs.ok:
                self._routine_dirty = True  # only a task count moved: checkpointed every few seconds
            else:
                self._dirty = True
        if not self._nodes:  # first step; afterwards _nodes_loop refreshes them off the step
            self._nodes, self._nodes_at = self.calls.nodes(), now
        placement = {n: placement_problem(p.placement, self._nodes) for n, p in self.desired.items()}
        paused = frozenset(n for n, r in self.rollouts.items() if r.state == rollout.PAUSED)
        actions = decide(self.desired, self.table, placement, now, paused)
        if actions:
            self._act(actions, now)
            if all(isinstance(a, CheckHealth) for a in actions):
                self._routine_dirty = True
            else:
                self._dirty = True
        self._track_rollouts(now)
        self.steps += 1
        self.last_step_ms = (time.perf_counter() - t0) * 1000
        self._step_ms.append(self.last_step_ms)
        self.last_step_cpu_ms = (time.thread_time() - c0) * 1000  # without waits for a CPU or the GIL
        record_step(self, now)  # fleet metrics (Ray metrics + the API's history), sampled ~1/s

    # -- acting --------------------------------------------------------------------------------
    def _act(self, actions: list, now: float) -> None:
        starts = [a for a in actions if isinstance(a, Start)]
        if starts:  # write-ahead: a generation is durable before its actor exists
            self._store_call(
                lambda s: s.put_many({keys.generation(*a.key): str(a.generation).encode() for a in starts})
            )
        for a in actions:
            pool = self.desired.get(a.key[0])
            rec = self.table.get(a.key)
            if isinstance(a, Start):
                if rec is None:
                    rec = SlotRecord(a.key[0], a.key[1])
                    self.table.add(rec)
                rec.generation, rec.created_at, rec.reason = a.generation, now, ""
                rec.shape_hash, rec.config_hash = pool.slot_shape_hash(), pool.config_hash()
                self.table.transition(a.key, SlotState.STARTING)
                self._record([LifecycleEvent("slot.started", a.key[0], a.key[1], a.generation)])
                try:
                    self.calls.create(
                        a.key, a.generation, pool, self.batch.get(pool.name, False), self._runtime_env(pool)
                    )
                except Exception as exc:
                    rec.failure_pending = True
                    self.table.transition(a.key, SlotState.STOPPING, f"could not create actor: {exc}")
            elif isinstance(a, MarkPending):
                if rec is None:
                    rec = SlotRecord(a.key[0], a.key[1])
                    self.table.add(rec)
                if rec.reason != a.reason:
                    self._record([LifecycleEvent("slot.pending", rec.pool, rec.index, rec.generation, a.reason)])
                self.table.transition(a.key, SlotState.PENDING, a.reason)
            elif isinstance(a, CheckHealth):
                rec.health_inflight = True
                self.calls.health(a.key, a.generation, a.timeout_s, now)
            elif isinstance(a, Drain):
                rec.drain_deadline = now + a.timeout_s
                rec.failure_pending, rec.retire = a.failure, a.retire
                self.table.transition(a.key, SlotState.DRAINING, a.reason)
                self._record([LifecycleEvent("slot.draining", rec.pool, rec.index, rec.generation, a.reason)])
                self.calls.drain(a.key, a.generation)
            elif isinstance(a, Kill):
                if a.failure:
                    self._rollout_failure(rec, a.reason)
                self.calls.kill(a.key, a.generation)
                self._release_work(a.key, a.generation, a.reason)
                self._svc().slot_gone(a.key, a.generation, a.reason, died=False)
                if rec.state is not SlotState.STOPPING:
                    rec.reason = a.reason
                self._record(finish_stop(self.table, a.key, now, pool, a.failure))
            elif isinstance(a, Forget):
                self.table.remove(a.key)
            elif isinstance(a, PushConfig):
                rec.config_inflight = True
                self.calls.reconfigure(a.key, a.generation, a.config, a.config_hash)

    # -- rollouts ------------------------------------------------------------------------------
    def _track_rollouts(self, now: float) -> None:
        for name, r in self.rollouts.items():
            pool = self.desired.get(name)
            if pool is not None and r.active and rollout.is_complete(r, self.table.of_pool(name), pool):
                r.state = rollout.COMPLETE
                self._dirty = True
                self._record([LifecycleEvent("rollout.completed", name, -1, 0, f"now at {r.to_version or '-'}")])

    def _rollout_failure(self, rec: SlotRecord | None, cause: str) -> None:
        r = self.rollouts.get(rec.pool) if rec is not None else None
        pool = self.desired.get(rec.pool) if rec is not None else None
        if r is None or pool is None or not r.active or not rollout.is_new(r, rec):
            return
        if rollout.record_failure(r, pool, cause):
            self._roll_back(r, automatic=True)

    def _roll_back(self, r: Rollout, automatic: bool) -> None:
        """Make the pool's pre-rollout spec desired again; decide() then replaces the new slots."""
        previous = PoolSpec.model_validate(r.from_spec)
        pools = [previous if p.name == r.pool else p for p in self.spec.pools]
        self.spec = self.spec.model_copy(update={"pools": pools})
        self.desired[r.pool] = previous
        r.state = rollout.ROLLED_BACK
        if not automatic:
            r.reason = "rolled back by operator"
        self._dirty = True
        self._record([LifecycleEvent("rollout.rolled_back", r.pool, -1, 0, r.reason,
                                     {"automatic": automatic, "to_version": r.from_version})])

    def current_spec(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def _active_rollout(self, pool: str) -> Rollout:
        self._pool(pool)
        r = self.rollouts.get(pool)
        if r is None or not r.active:
            raise FleetError(f"pool {pool!r} has no rollout in progress")
        return r

    def pause_rollout(self, pool: str) -> dict[str, Any]:
        r = self._active_rollout(pool)
        r.state, r.reason, self._dirty = rollout.PAUSED, "paused by operator", True
        self._record([LifecycleEvent("rollout.paused", pool, -1, 0)])
        return r.to_json()

    def resume_rollout(self, pool: str) -> dict[str, Any]:
        r = self._active_rollout(pool)
        r.state, r.reason, self._dirty = rollout.PROGRESSING, "", True
        self._record([LifecycleEvent("rollout.resumed", pool, -1, 0)])
        return r.to_json()

    def rollback(self, pool: str) -> dict[str, Any]:
        r = self._active_rollout(pool)
        self._roll_back(r, automatic=False)
        return r.to_json()

    def _release_work(self, key, generation: int, cause: str) -> None:
        wq = self._workqueues.get(key[0])
        if wq is not None:

            wq.release.remote(slot_actor_name(key[0], key[1], generation), cause)

    # -- events & persistence ------------------------------------------------------------------
    def _record(self, events: list[LifecycleEvent]) -> None:
        for e in events:
            ts = self.hlc.tick()
            ev = Event(
                kind=e.kind,
                physical=ts.physical,
                counter=ts.counter,
                origin="supervisor",
                pool=e.pool,
                slot=f"{e.pool}:{e.index}",
                generation=e.generation,
                message=e.message,
                data=e.data,
            )
            self._pending_events.append(ev)
            self._recent.append(ev)
            log.info("%s %s g%s %s", ev.kind, ev.slot, ev.generation, ev.message)

    def _store_try(self, fn) -> tuple[bool, Any]:
        """Run ``fn(store)``; ``(False, None)`` when the store is unreachable (the fleet runs degraded)."""
        try:
            if self.store is None:
                self.store = open_store(self.store_url, self.namespace)
            return True, fn(self.store)
        except (StoreError, OSError) as exc:
            if not self.store_degraded:
                log.warning("store unavailable, running degraded: %s", exc)
            self.store_degraded, self.store_error, self._store_behind = True, str(exc), True
            return False, None

    def _store_call(self, fn) -> Any:
        return self._store_try(fn)[1]

    def checkpoint(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "batch": self.batch,
            "slots": [r.persisted() for r in self.table],
            "retired_generations": [[p, i, g] for (p, i), g in self.table.floors().items()],
            "rollouts": {n: r.to_json() for n, r in self.rollouts.items()},
            "saved_at": time.time(),
        }

    def _persist_once(self) -> None:
        if not self.recovered:
            return  # until the checkpoint was read, an empty state must never overwrite it
        if self._routine_dirty and time.monotonic() - self._checkpoint_at >= ROUTINE_CHECKPOINT_S:
            self._dirty = True
        ok = True
        if self._store_behind:
            # Catching up after an outage: the store may have lost everything (a fresh Redis), so
            # write the generations (never lowering one) and the checkpoint again whatever changed.
            self._store_behind, self._dirty = False, True
            gens = {keys.generation(*k): g for k, g in self.table.floors().items()}
            gens.update({keys.generation(r.pool, r.index): r.generation for r in self.table if r.generation})
            if gens and not self._store_try(lambda s: [s.raise_to(k, g) for k, g in gens.items()])[0]:
                return
        if self._dirty:
            self._dirty = self._routine_dirty = False  # before the snapshot: later changes make it dirty again
            snap = json.dumps(self.checkpoint()).encode()
            self._checkpoint_at = time.monotonic()
            if not self._store_try(lambda s: s.put(keys.SUPERVISOR_CHECKPOINT, snap))[0]:
                self._dirty, ok = True, False
        if self._pending_events:
            batch, self._pending_events = self._pending_events, []
            if not self._store_try(lambda s: EventLog(s).append(batch))[0]:
                self._pending_events = batch + self._pending_events
                ok = False
        if self.store_degraded and ok and not self._store_behind:
            log.warning("store is back; caught up")
            self.store_degraded, self.store_error = False, None

    async def _nodes_loop(self) -> None:
        """Refresh the cluster's node list (a GCS round trip) in a thread, outside the step."""
        while True:
            try:
                self._nodes = await asyncio.to_thread(self.calls.nodes)
                self._nodes_at = time.time()
            except Exception:
                log.exception("listing nodes failed; will retry")
            await asyncio.sleep(NODE_REFRESH_S)

    async def _persist_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._persist_once)
            except Exception:
                log.exception("checkpoint failed; will retry")
            await asyncio.sleep(self.tick_s if not self.store_degraded else 1.0)

    # -- recovery ------------------------------------------------------------------------------
    def _recover(self) -> None:
        ok, raw = self._store_try(lambda s: s.get(keys.SUPERVISOR_CHECKPOINT))
        if not ok:
            return  # can't know the desired state yet; try again next tick
        gens: dict[tuple[str, int], int] = {}
        if raw:
            data = json.loads(raw)
            self.spec = FleetSpec.model_validate(data["spec"])
            self.desired = {p.name: p for p in self.spec.pools}
            self.batch = dict(data.get("batch", {}))
            self.rollouts = {n: Rollout.from_json(r) for n, r in data.get("rollouts", {}).items()}
            for r in data.get("slots", []):
                self.table.add(SlotRecord.restore(r))
            for p, i, g in data.get("retired_generations", []):
                self.table.raise_floor((p, i), g)
            ok, stored = self._store_try(lambda s: {k: int(s.get(k) or 0) for k in s.keys("gen:")})
            if not ok:  # without the write-ahead generations, a restart could reuse one: try again
                self.table, self.rollouts = SlotTable(), {}
                return
            for k, v in stored.items():
                _, pool, idx = k.split(":")
                gens[(pool, int(idx))] = v
        live: dict[tuple[str, int], list[tuple[int, str, Any]]] = {}
        for name, handle in self.calls.live_slot_actors().items():
            pool, idx, gen = parse_slot_actor_name(name)
            live.setdefault((pool, idx), []).append((gen, name, handle))
        now = time.time()
        for key, actors in live.items():
            actors.sort(reverse=True)
            (gen, name, handle), older = actors[0], actors[1:]
            for _, old_name, _ in older:
                self.calls.kill_by_name(old_name)
            pool = self.desired.get(key[0])
            rec = self.table.get(key)
            if pool is None or key[1] >= pool.slots or (rec is not None and gen < rec.generation):
                self.calls.kill_by_name(name)  # not ours (any more)
                continue
            if rec is None:
                rec = SlotRecord(key[0], key[1], generation=gen)
                self.table.add(rec)
            if gen > rec.generation or rec.state not in (SlotState.RUNNING, SlotState.DRAINING):
                rec.generation, rec.created_at = gen, now
                rec.shape_hash = rec.shape_hash or pool.slot_shape_hash()
                self.table.transition(key, SlotState.STARTING)
                self.calls.attach(key, gen, handle, start=True)
            elif rec.state is SlotState.DRAINING:
                rec.drain_deadline = now + pool.recycle.drain_timeout_s
                self.calls.attach(key, gen, handle, start=False)
                self.calls.drain(key, gen)
            else:
                rec.next_check_at = now
                self.calls.attach(key, gen, handle, start=False)
        for key, gen in gens.items():  # write-ahead generations of positions without a record
            if self.table.get(key) is None:
                self.table.raise_floor(key, gen)
        for rec in self.table:
            rec.generation = max(rec.generation, gens.get(rec.key, 0))
            rec.health_inflight = rec.config_inflight = False
            if rec.state in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.STOPPING):
                if self.calls.handle(rec.key) is None:
                    self.table.transition(rec.key, SlotState.STOPPING, "lost while the supervisor was down")
        for name, is_batch in self.batch.items():
            if is_batch and name in self.desired:
                self._ensure_workqueue(name)
        self._release_orphan_leases()
        self.recovered = True
        self._dirty = True
        if raw:
            self._record([LifecycleEvent("supervisor.recovered", "", -1, 0, f"{len(self.table)} slot positions")])

    def _release_orphan_leases(self) -> None:
        owned = {
            slot_actor_name(r.pool, r.index, r.generation)
            for r in self.table
            if self.calls.handle(r.key) is not None
        }
        for pool, wq in self._workqueues.items():
            try:
                for lessee in ray.get(wq.lessees.remote(), timeout=10):
                    if lessee not in owned:
                        wq.release.remote(lessee, "slot lost while the supervisor was down")
            except Exception as exc:
                log.warning("could not check leases of pool %s: %s", pool, exc)

    def _ensure_workqueue(self, pool: str) -> Any:
        wq = self._workqueues.get(pool)
        if wq is None:
            from .workqueue import WorkQueue

            wq = WorkQueue.options(
                name=workqueue_name(pool),
                namespace=self.namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                resources={HEAD_RESOURCE: 0.001},
            ).remote(pool)
            self._workqueues[pool] = wq
        return wq

    # -- the API (called through the actor) -----------------------------------------------------
    def ping(self) -> int:
        return os.getpid()

    def is_ready(self) -> bool:
        return self.recovered

    async def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Validate the whole spec, then make it the desired state. A bad spec changes nothing.

        A pool with a ``package`` is validated by a task running in that package's runtime env, so a
        version that can't be installed or imported is rejected here and the old one keeps running."""
        remote = await self._resolve_packaged(spec)
        new_spec, resolved = validate_spec(spec, resolve=self._resolver(remote))
        return self._set_spec(new_spec, resolved)

    # -- packaged automations --------------------------------------------------------------------
    def _runtime_env(self, pool: PoolSpec) -> dict[str, Any] | None:
        if not pool.package:
            return None
        cached = self._package_envs.get(pool.package)
        if cached is None or time.monotonic() - cached[0] > PACKAGE_RECHECK_S:
            from fleet_ray.spec.packages import unpack

            from .packaging import runtime_env_for

            cache = PACKAGE_CACHE / self.namespace
            modules = self._store_call(lambda s: unpack(s, pool.package, cache))
            if modules is None:
                raise StoreError(f"can't read package {pool.package}: {self.store_error}")
            cached = (time.monotonic(), runtime_env_for(modules, str(cache)))
            self._package_envs[pool.package] = cached
        return cached[1]

    async def _resolve_packaged(self, spec: dict[str, Any]) -> dict[str, Any]:
        from .packaging import resolve_in_env

        try:
            pools = FleetSpec.model_validate(spec).pools
        except Exception:
            return {}  # validate_spec reports the shape errors
        out: dict[str, Any] = {}
        for pool in pools:
            if not pool.package:
                continue
            try:
                env = await asyncio.to_thread(self._runtime_env, pool)
                out[pool.name] = await resolve_in_env.options(runtime_env=env).remote(pool.model_dump(mode="json"))
            except Exception as exc:
                out[pool.name] = exc
        return out

    def _resolver(self, remote: dict[str, Any]):
        from fleet_ray.errors import SpecError
        from fleet_ray.spec.discovery import resolve_pool

        def resolve(pool: PoolSpec) -> ResolvedPool:
            if not pool.package:
                return resolve_pool(pool)
            found = remote.get(pool.name)
            if found is None:  # scale / pause: same package and config as validated before
                prev = self.desired.get(pool.name)
                same = prev is not None and prev.model_dump(exclude={"slots", "paused"}) == pool.model_dump(
                    exclude={"slots", "paused"})
                if not same:
                    raise SpecError([{"loc": f"pools.{pool.name}.package", "msg": "package pool needs apply()"}])
                found = {"batch": self.batch.get(pool.name, False), "distribution": None, "installed_version": None}
            if isinstance(found, BaseException):
                cause = getattr(found, "cause", None) or found
                if isinstance(cause, SpecError):
                    raise cause
                from fleet_ray.errors import AutomationError

                field = "automation" if isinstance(cause, AutomationError) else "package"
                msg = f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
                raise SpecError([{"loc": f"pools.{pool.name}.{field}", "msg": f"{pool.package}: {msg}"}])
            return ResolvedPool(spec=pool, batch=found["batch"], distribution=found["distribution"],
                                installed_version=found["installed_version"])

        return resolve

    def _set_spec(self, new_spec: FleetSpec, resolved: dict[str, ResolvedPool]) -> dict[str, Any]:
        old = self.desired
        new = {p.name: p for p in new_spec.pools}
        summary = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(n for n in set(new) & set(old) if new[n] != old[n]),
        }
        now = time.time()
        for name in summary["changed"]:
            if rollout.needs_rollout(old.get(name), new[name]):
                self.rollouts[name] = rollout.begin(old[name], new[name], now)
                self._record([LifecycleEvent("rollout.started", name, -1, 0,
                                             f"{old[name].version or '-'} -> {new[name].version or '-'}")])
        for name in summary["removed"]:
            self.rollouts.pop(name, None)
        self.spec, self.desired = new_spec, new
        for name, r in resolved.items():
            self.batch[name] = r.batch
        self._svc().spec_applied(new_spec, resolved)
        for name in summary["removed"]:
            self.batch.pop(name, None)
        for name, pool in new.items():
            if self.batch.get(name):
                wq = self._ensure_workqueue(name)
                wq.set_paused.remote(pool.paused)
        for name in summary["removed"]:
            wq = self._workqueues.pop(name, None)
            if wq is not None:
                ray.kill(wq, no_restart=True)
        for name in summary["added"] + summary["changed"]:
            self._record([LifecycleEvent("pool.applied", name, -1, 0, f"{new[name].slots} slots")])
        self._dirty = True
        return summary

    def _pool(self, name: str) -> PoolSpec:
        pool = self.desired.get(name)
        if pool is None:
            raise UnknownPool(name)
        return pool

    def _update_pool(self, name: str, **changes: Any) -> dict[str, Any]:
        self._pool(name)
        raw = self.spec.model_dump(mode="json")
        for p in raw["pools"]:
            if p["name"] == name:
                p.update(changes)
        new_spec, resolved = validate_spec(raw, resolve=self._resolver({}))
        return self._set_spec(new_spec, resolved)

    def scale(self, pool: str, slots: int) -> dict[str, Any]:
        return self._update_pool(pool, slots=slots)

    def set_paused(self, pool: str, paused: bool) -> dict[str, Any]:
        return self._update_pool(pool, paused=paused)

    def recycle(self, slot: str) -> dict[str, Any]:
        try:
            key = parse_slot_id(slot)
        except ValueError:
            raise UnknownSlot(slot) from None
        rec = self.table.get(key)
        if rec is None:
            raise UnknownSlot(slot)
        rec.recycle_requested = "recycled by operator"
        if rec.state in (SlotState.PENDING, SlotState.FAILED):
            rec.backoff_until = 0.0
        return {"slot": slot, "generation": rec.generation, "state": rec.state.value}

    def workqueue(self, pool: str) -> dict[str, Any]:
        spec = self._pool(pool)
        if not self.batch.get(pool):
            raise JobError(f"pool {pool!r} runs a continuous automation; only batch pools take items")
        self._ensure_workqueue(pool)
        return {"name": workqueue_name(pool), "max_item_retries": spec.max_item_retries}

    def status(self) -> dict[str, Any]:
        return self.status_model().model_dump(mode="json")

    def status_model(self) -> FleetStatus:
        now = time.time()
        pools = []
        for name, spec in self.desired.items():
            recs = self.table.of_pool(name)
            counts: dict[str, int] = {}
            for r in recs:
                counts[r.state.value] = counts.get(r.state.value, 0) + 1
            running = counts.get("running", 0)
            pending = [r for r in recs if r.state is SlotState.PENDING and r.reason]
            degraded = [r for r in recs if r.backoff_until > now or (r.escalated and r.state is SlotState.FAILED)]
            if degraded:
                state, reason = "degraded", f"{len(degraded)} slot(s) failing repeatedly; backing off"
            elif pending:
                state, reason = "pending", pending[0].reason
            elif running == spec.slots and len(recs) == spec.slots:
                state, reason = "ok", ""
            else:
                state, reason = "scaling", f"{running}/{spec.slots} running"
            pools.append(
                PoolStatus(
                    name=name,
                    automation=spec.automation,
                    version=spec.version,
                    kind=spec.kind,
                    batch=self.batch.get(name, False),
                    desired=spec.slots,
                    paused=spec.paused,
                    state=state,
                    reason=reason,
                    counts=counts,
                    rollout=rollout.status(self.rollouts[name], recs, spec) if name in self.rollouts else None,
                    slots=[self._slot_status(r, now) for r in recs],
                )
            )
        return FleetStatus(
            fleet=self.fleet_name,
            namespace=self.namespace,
            supervisor_pid=os.getpid(),
            supervisor_started=self.started,
            store=self.store.url if self.store else self.store_url,
            store_degraded=self.store_degraded,
            store_error=self.store_error,
            last_step_ms=round(self.last_step_ms, 3),
            last_step_cpu_ms=round(self.last_step_cpu_ms, 3),
            step_ms_p50=round(_quantile(self._step_ms, 0.5), 3),
            step_ms_p95=round(_quantile(self._step_ms, 0.95), 3),
            supervisor_nice=self.nice,
            supervisor_nice_problem=self.nice_problem,
            steps=self.steps,
            pools=pools,
            events=[
                EventStatus(
                    kind=e.kind,
                    at=e.physical / 1000,
                    pool=e.pool,
                    slot=e.slot,
                    generation=e.generation,
                    message=e.message,
                )
                for e in list(self._recent)[-50:]
            ],
        )

    @staticmethod
    def _slot_status(r: SlotRecord, now: float) -> SlotStatus:

        return SlotStatus(
            id=r.slot_id,
            pool=r.pool,
            index=r.index,
            generation=r.generation,
            state=r.state.value,
            actor=slot_actor_name(r.pool, r.index, r.generation),
            node_id=r.node_id,
            pid=r.pid,
            version=r.version,
            uptime_s=round(now - r.ready_at, 3) if r.ready_at and r.state is SlotState.RUNNING else None,
            tasks=r.tasks,
            recycles=r.recycles,
            rss_mb=round(r.rss_mb, 1),
            phase=r.phase,
            progress=r.progress,
            reason=r.reason
            or (f"waiting for Ray to start its process ({now - r.created_at:.0f}s)"
                if r.state is SlotState.STARTING and r.alive_at is None and r.created_at else ""),
            backoff_s=round(max(0.0, r.backoff_until - now), 3),
            browser=BrowserSlotStatus.from_health(r.browser) if r.browser else None,
        )

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in list(self._recent)[-limit:]]

    async def shutdown(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Remove every slot (gracefully, within ``timeout_s``), the work queues and the checkpoint."""
        self._set_spec(FleetSpec(name=self.fleet_name), {})
        deadline = time.time() + timeout_s
        while len(self.table) and time.time() < deadline:
            await asyncio.sleep(self.tick_s)
        leftover = len(self.table)
        for rec in list(self.table):
            self.calls.kill(rec.key, rec.generation)
            self.table.remove(rec.key)
        for name in self.calls.live_slot_actors():
            self.calls.kill_by_name(name)
        for wq in self._workqueues.values():
            ray.kill(wq, no_restart=True)
        self._workqueues.clear()
        self._svc().shutdown()
        for t in self._tasks:
            t.cancel()
        self._store_call(lambda s: s.delete(keys.SUPERVISOR_CHECKPOINT, *s.keys("gen:")))
        return {"killed_after_timeout": leftover}

    # -- control-plane API (fleet_ray.serve calls these by name; see serve/backend.py) -------------
    async def api_events(
        self,
        kinds: list[str] | None = None,
        pool: str | None = None,
        slot: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after: list | None = None,
        limit: int = 200,
    ) -> dict[str, Any]:
        """Lifecycle events, oldest first. With ``after`` (cursor ``[physical, counter, id]``, exclusive)
        or ``since_ms``: the oldest ``limit`` matches from there on; otherwise the newest ``limit``.
        A range (``after``/``since_ms``) reads the durable log, merged with the events not yet persisted,
        so events other writers append to the log (operator actions, slots) are included.
        ``kinds`` match exactly or by prefix (``slot.*``)."""
        recent = list(self._recent)
        cursor = tuple(after) if after else None
        start = cursor[0] if cursor else since_ms
        events, source = recent, "memory"
        if start is not None:
            stored = await asyncio.to_thread(
                self._store_call, lambda s: EventLog(s).query(since_ms=start, until_ms=until_ms)
            )
            if stored is not None:
                ids = {e.id for e in stored}
                events = sorted(stored + [e for e in recent if e.id not in ids], key=lambda e: (e.physical, e.counter, e.id))
                source = "log"

        def keep(e: Event) -> bool:
            return (
                (cursor is None or (e.physical, e.counter, e.id) > cursor)
                and (since_ms is None or e.physical >= since_ms)
                and (until_ms is None or e.physical < until_ms)
                and (pool is None or e.pool == pool)
                and (slot is None or e.slot == slot)
                and (not kinds or any(e.kind == k or (k.endswith("*") and e.kind.startswith(k[:-1])) for k in kinds))
            )

        matched = [e for e in events if keep(e)]
        matched = matched[:limit] if start is not None else matched[-limit:]
        newest = [recent[-1].physical, recent[-1].counter, recent[-1].id] if recent else [int(time.time() * 1000), 0, ""]
        return {"events": [e.model_dump(mode="json") for e in matched], "source": source, "newest": newest}

    def api_nodes(self) -> list[dict[str, Any]]:
        """Ray nodes with their tags (resources, labels) and the slots placed on each."""
        on: dict[str, list[str]] = {}
        for r in self.table:
            if r.node_id and r.state in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING):
                on.setdefault(r.node_id, []).append(r.slot_id)
        return [
            {
                "node_id": n.node_id,
                "alive": n.alive,
                "is_head": n.is_head,
                "resources": {k: float(v) for k, v in n.resources.items() if not k.startswith("node:")},
                "labels": dict(n.labels),
                "slots": sorted(on.get(n.node_id, [])),
            }
            for n in self._nodes
        ]

    def api_spec(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def api_streams(self) -> list[dict[str, Any]]:
        """Typed output streams (name, depth, capacity, rates, items_emitted, producers, consumers)."""
        return self._svc().streams_out()

    def api_metrics_series(self) -> dict[str, Any]:
        from .metrics import metrics_of

        return metrics_of(self).sampler.series()

    def api_drain(self, pool: str) -> dict[str, Any]:
        """Pause the pool and drain all its slots (each within its drain timeout); the slot count
        is remembered for :meth:`api_resume` (in memory and in the ``pool.drained`` event)."""
        spec = self._pool(pool)
        drained = self.__dict__.setdefault("_drained_from", {})
        if spec.slots:
            drained[pool] = spec.slots
        previous = drained.get(pool, 0)
        self._update_pool(pool, slots=0, paused=True)
        self._record([LifecycleEvent("pool.drained", pool, -1, 0, f"draining {spec.slots} slot(s)",
                                     {"previous_slots": previous})])
        return {"pool": pool, "desired": 0, "paused": True, "previous_slots": previous}

    async def api_resume(self, pool: str, slots: int | None = None) -> dict[str, Any]:
        """Unpause a pool; a drained pool gets its slots back (or ``slots`` if given)."""
        spec = self._pool(pool)
        target = slots if slots is not None else (spec.slots or self.__dict__.get("_drained_from", {}).get(pool))
        if target is None:  # drained before a supervisor restart: the event log remembers
            stored = await asyncio.to_thread(
                self._store_call, lambda s: EventLog(s).query(kind="pool.drained", pool=pool)
            )
            target = int(stored[-1].data.get("previous_slots", 0)) if stored else 0
        self._update_pool(pool, slots=target, paused=False)
        self.__dict__.get("_drained_from", {}).pop(pool, None)
        self._record([LifecycleEvent("pool.resumed", pool, -1, 0, f"{target} slot(s)")])
        return {"pool": pool, "desired": target, "paused": False}

    async def api_breakers(self) -> list[dict[str, Any]]:
        """Campaign reputation breakers of this namespace (fleet_ray.campaign), tripped or not."""
        from fleet_ray.campaign.operator import breaker_status

        states = await asyncio.to_thread(breaker_status, self.store_url, self.namespace)
        return [{**s.model_dump(mode="json"), "reason": s.reason} for s in states]

    async def api_reset_breaker(self, target: str, operator: str = "api") -> dict[str, Any]:
        """Close a target's breaker (appends ``campaign.breaker.reset``); returns the state before."""
        from fleet_ray.campaign.operator import reset_breaker

        before = await asyncio.to_thread(reset_breaker, self.store_url, self.namespace, target, operator)
        return {**before.model_dump(mode="json"), "reason": before.reason}

    # -- streams, live events, crashes, grouped errors, resumable runs (logic: actors/services.py) --
    def _svc(self) -> Any:
        svc = self.__dict__.get("_services")
        if svc is None:
            from .services import FleetServices

            svc = self._services = FleetServices(self)
        return svc

    def streams(self) -> list[dict[str, Any]]:
        """Every stream's latest hub stats (depth, bytes, rates, blocked producers, per-group lag)."""
        svc = self._svc()
        return [{**svc.stats.get(n, {"name": n}), "producer_pool": e.pool, "consumer_pools": sorted(e.consumers)}
                for n, e in sorted(svc.streams.items())]

    def stream_info(self, stream: str) -> dict[str, Any]:
        """Where a driver finds a stream: its hub actor's name and the model's import path."""
        from fleet_ray.errors import StreamError


        entry = self._svc().streams.get(stream)
        if entry is None:
            raise StreamError(f"no stream {stream!r} (streams: {sorted(self._svc().streams) or 'none'})")
        return {"stream": stream, "hub": hub_name(stream), "model": entry.model, "pool": entry.pool,
                "consumers": sorted(entry.consumers), "options": entry.options.model_dump()}

    async def add_sink(self, stream: str, spec: dict[str, Any], name: str = "default") -> dict[str, Any]:
        """Start a sink actor copying ``stream`` to JSONL or a Redis Stream (fleet_ray.streams.sinks).
        Its consumer group exists when this returns, so it gets every item retained from now on."""
        from .stream_sink import start_sink

        self.stream_info(stream)
        await self._svc().streams[stream].hub.add_group.remote(f"sink:{name}", True, "earliest")
        start_sink(self.namespace, stream, name, spec)
        return {"stream": stream, "sink": sink_name(stream, name), "group": f"sink:{name}"}

    def ingest(self, events: list[dict[str, Any]]) -> int:
        """Slots ship their events here (task.failed, automation.error, stream.item_invalid, ...)."""
        return self._svc().ingest(events)

    def error_groups(self, pool: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """Failures grouped by (exception type, first frame in user code), most recently seen first.

        Each: ``{key, error_type, frame, count, kinds, pools, slots, phases, first_seen, last_seen,
        sample}`` (times in epoch seconds; see fleet_ray.observe.grouping.ErrorGroup)."""
        return self._svc().errors.dump(pool=pool, since=since)

    async def crashes(self, pool: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Crash records (one per crashed slot generation), oldest first (fleet_ray.observe.crashes.CrashRecord)."""
        from fleet_ray.observe.crashes import list_crashes

        found = await asyncio.to_thread(self._store_call, lambda s: list_crashes(s, pool, limit))
        return [r.model_dump(mode="json") for r in found or []]

    def configure_notifiers(self, config: dict[str, Any]) -> dict[str, Any]:
        """Replace the error notifiers (fleet_ray.observe.notify.NotifyConfig; tokens stay in memory only)."""
        from fleet_ray.observe.notify import NotifyConfig, Reporter

        svc = self._svc()
        cfg = NotifyConfig.model_validate(config)
        svc.reporter.close()
        svc.reporter = Reporter(cfg, fleet=self.fleet_name)
        return cfg.summary()

    def notify_status(self) -> dict[str, Any]:
        rep = self._svc().reporter
        return {"config": rep.config.summary(), "sent": [n.model_dump(mode="json") for n in rep.sent],
                "failures": rep.failures}

    def notify_digest_now(self) -> None:
        self._svc().reporter.digest_now()

    async def wait_events(self, after: list | None = None, kinds: list[str] | None = None, pool: str | None = None,
                          timeout_s: float = 10.0) -> dict[str, Any]:
        """Long-poll: events newer than cursor ``after`` ([physical, counter, id]); waits up to
        ``timeout_s`` for the first. Returns ``{"events": [...], "cursor": [...]}``."""
        from fleet_ray.observe.events import _kind_matches

        cursor = tuple(after) if after else None
        if cursor is None and self._recent:
            last = self._recent[-1]
            cursor = (last.physical, last.counter, last.id)
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in list(self._recent)
                     if (cursor is None or (e.physical, e.counter, e.id) > cursor)
                     and (not kinds or _kind_matches(e.kind, kinds)) and (pool is None or e.pool == pool)]
            if found or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        found.sort(key=lambda e: (e.physical, e.counter, e.id))
        if found:
            cursor = (found[-1].physical, found[-1].counter, found[-1].id)
        return {"events": [e.model_dump(mode="json") for e in found], "cursor": list(cursor) if cursor else None}

    async def _ledger(self, run_id: str, fn) -> Any:
        from fleet_ray.client.runs import RunLedger

        def work() -> Any:
            store = self.__dict__.get("_run_store")
            if store is None:
                store = self._run_store = open_store(self.store_url, self.namespace)
            return fn(RunLedger(store, run_id))

        return await asyncio.to_thread(work)

    async def run_state(self, run_id: str) -> dict[str, Any]:
        return (await self._ledger(run_id, lambda led: led.state())).model_dump(mode="json")

    async def run_record(self, run_id: str, records: list[dict[str, Any]]) -> int:
        from fleet_ray.client.runs import RunRecord

        recs = [RunRecord.model_validate(r) for r in records]
        return await self._ledger(run_id, lambda led: led.record(recs))

    async def run_mark_submitted(self, run_id: str, ids: list[str], keep_first: int | None) -> int:
        return await self._ledger(run_id, lambda led: led.mark_submitted(ids, keep_first))

    async def run_results(self, run_id: str) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in await self._ledger(run_id, lambda led: led.results())]

    def run_resumed(self, pool: str, run_id: str, total: int, skipped: int, adopted: int, submitted: int) -> None:
        from fleet_ray.observe.kinds import RunResumed

        self._svc().emit(RunResumed, pool=pool, run_id=run_id, total=total, skipped=skipped, adopted=adopted,
                         submitted=submitted, message=f"run {run_id}: {skipped} of {total} already done")


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Supervisor(SupervisorCore):
    """The supervisor actor (see :class:`SupervisorCore`)."""

    async def __init__(self, store_url: str, namespace: str, fleet_name: str = "fleet", tick_s: float = 0.1):
        SupervisorCore.__init__(self, store_url, namespace, fleet_name, tick_s)
        # Ray runs workers at nice 15; the supervisor is control plane, like the raylet (actors/priority.py)
        self.nice, self.nice_problem = control_plane_priority(wanted_nice())
        self.start_background()


def _quantile(values, q: float) -> float:
    """Nearest-rank quantile (0.0 when there are no values yet)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

