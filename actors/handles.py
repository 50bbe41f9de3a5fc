"""Every Ray call the supervisor makes to slot actors, work queues and the cluster, in thin wrappers.

The supervisor's deciding code (:mod:`fleet_ray.control.reconcile`, :mod:`fleet_ray.control.lifecycle`) never imports
Ray; it receives :class:`~fleet_ray.control.lifecycle.Observation` values from :meth:`SlotCalls.poll` and gives
actions back, which the supervisor carries out through the methods here. Polling never blocks:
``ray.wait(..., timeout=0)`` over every outstanding call. :class:`WorkQueueCalls` does the same for
batch pools' work queues. Unit tests hand the supervisor :class:`fleet_ray.testing.FakeSlotCalls` and
:class:`fleet_ray.testing.FakeWorkQueues` instead: same methods, no Ray.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from fleet_ray.actors.browser_slot import browser_slot_class
from fleet_ray.actors.slot import SlotActor
from fleet_ray.control.lifecycle import (
    Alive,
    ConfigResult,
    Died,
    Drained,
    HealthReport,
    HealthTimeout,
    Observation,
    Ready,
    SlotKey,
    StartFailed,
)
from fleet_ray.control.reconcile import NodeView
from fleet_ray.names import HEAD_RESOURCE, parse_slot_actor_name, slot_actor_name, workqueue_name
from fleet_ray.ray_boundary import is_actor_death, short_cause
from fleet_ray.spec.models import PoolSpec
from fleet_ray.store import open_work_log

from .packaging import resolve_in_env, runtime_env_for
from .workqueue import WorkQueue

log = logging.getLogger(__name__)



@dataclass
class _Pending:
    kind: str  # alive | start | watch | health | drain | config
    key: SlotKey
    generation: int
    deadline: float | None = None
    extra: Any = None


class SlotCalls:
    """Creates, calls and kills slot actors; turns finished calls into observations."""

    def __init__(self, namespace: str, store_url: str):
        self.namespace = namespace
        self.store_url = store_url
        self._handles: dict[SlotKey, tuple[int, Any]] = {}
        # every outstanding call; a done-callback queues it in _finished, so a poll costs
        # O(finished calls), not O(outstanding calls) — 1,000 slots keep 1,000 watch calls open
        self._pending: dict[int, tuple[_Pending, Any]] = {}
        self._finished: deque[int] = deque()
        self._health: dict[int, _Pending] = {}
        self._next_id = 0

    # -- cluster -------------------------------------------------------------------------------
    @staticmethod
    def nodes() -> list[NodeView]:
        out = []
        for n in ray.nodes():
            res = n.get("Resources", {}) or {}
            out.append(
                NodeView(
                    node_id=n["NodeID"],
                    alive=bool(n.get("Alive")),
                    resources=res,
                    labels={k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")},
                    is_head=HEAD_RESOURCE in res,
                )
            )
        return out

    def live_slot_actors(self) -> dict[str, Any]:
        """Named slot actors that exist now in the fleet's namespace (for adoption after a restart)."""
        found = {}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry.get("namespace") != self.namespace:
                continue
            name = entry["name"]
            if parse_slot_actor_name(name) is None:
                continue
            try:
                found[name] = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                continue
        return found

    # -- slot actors ---------------------------------------------------------------------------
    def create(
        self, key: SlotKey, generation: int, pool: PoolSpec, batch: bool, runtime_env: dict | None = None
    ) -> None:

        cls = browser_slot_class() if pool.kind == "browser" else SlotActor
        opts: dict[str, Any] = {
            "name": slot_actor_name(key[0], key[1], generation),
            "namespace": self.namespace,
            "lifetime": "detached",
            "max_restarts": 0,
            "num_cpus": pool.placement.num_cpus,
            "resources": dict(pool.placement.resources),
            "max_concurrency": max(8, pool.concurrency + 4),
        }
        if pool.placement.memory_mb:
            opts["memory"] = int(pool.placement.memory_mb * 1024 * 1024)
        if pool.placement.labels:
            opts["label_selector"] = dict(pool.placement.labels)
        if runtime_env:
            opts["runtime_env"] = runtime_env
        handle = cls.options(**opts).remote(
            pool.model_dump(mode="json"),
            key[1],
            generation,
            workqueue_name(pool.name) if batch else None,
            self.namespace,
            self.store_url,
        )
        self.attach(key, generation, handle, start=True)

    def attach(self, key: SlotKey, generation: int, handle: Any, start: bool) -> None:
        """Track a slot actor: (re)issue its start call if asked, and a long-poll that fails when it dies."""
        self._handles[key] = (generation, handle)
        if start:
            self._track(handle.info.remote(), _Pending("alive", key, generation))
            self._track(handle.start.remote(), _Pending("start", key, generation))
        self._track(handle.watch.remote(), _Pending("watch", key, generation))

    def _track(self, ref: ray.ObjectRef, p: _Pending) -> None:
        call_id = self._next_id
        self._next_id += 1
        future = ref.future()
        self._pending[call_id] = (p, future)
        if p.kind == "health":
            self._health[call_id] = p
        future.add_done_callback(lambda _f, call_id=call_id: self._finished.append(call_id))

    def _handle(self, key: SlotKey, generation: int) -> Any | None:
        entry = self._handles.get(key)
        return entry[1] if entry and entry[0] == generation else None

    def health(self, key: SlotKey, generation: int, timeout_s: float, now: float) -> None:
        h = self._handle(key, generation)
        if h is not None:
            self._track(h.health.remote(), _Pending("health", key, generation, now + timeout_s))

    def drain(self, key: SlotKey, generation: int) -> None:
        h = self._handle(key, generation)
        if h is not None:
            self._track(h.drain.remote(), _Pending("drain", key, generation))

    def reconfigure(self, key: SlotKey, generation: int, config: dict, config_hash: str) -> None:
        h = self._handle(key, generation)
        if h is not None:
            self._track(h.reconfigure.remote(config), _Pending("config", key, generation, extra=config_hash))

    def kill(self, key: SlotKey, generation: int) -> None:
        entry = self._handles.get(key)
        if entry and entry[0] == generation:
            del self._handles[key]
            try:
                ray.kill(entry[1], no_restart=True)
            except Exception as exc:  # already gone
                log.debug("kill %s g%d: %s", key, generation, exc)
        for call_id, (p, _) in list(self._pending.items()):
            if p.key == key and p.generation == generation:
                del self._pending[call_id]
                self._health.pop(call_id, None)

    def kill_by_name(self, name: str) -> None:
        try:
            ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=True)
        except ValueError:
            pass

    def handle(self, key: SlotKey) -> Any | None:
        entry = self._handles.get(key)
        return entry[1] if entry else None

    def pid_of(self, key: SlotKey) -> tuple[int, Any] | None:
        return self._handles.get(key)

    # -- packaged automations ------------------------------------------------------------------
    @staticmethod
    def upload_package(module_dirs: list[str], scratch_dir: str) -> dict[str, Any]:
        """Upload a package's unpacked modules to the cluster; the runtime env that carries them."""

        return runtime_env_for(module_dirs, scratch_dir)

    @staticmethod
    async def resolve_in_env(pool: PoolSpec, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
        """Resolve a packaged pool (entry point, version pin, config) in a task inside its runtime env."""

        return await resolve_in_env.options(runtime_env=runtime_env).remote(pool.model_dump(mode="json"))

    # -- observation ---------------------------------------------------------------------------
    def poll(self, now: float) -> list[Observation]:
        """Collect every finished call without blocking; time out overdue health checks."""
        out: list[Observation] = []
        while self._finished:
            call_id = self._finished.popleft()
            entry = self._pending.pop(call_id, None)
            if entry is None:
                continue  # its slot was killed meanwhile
            p, future = entry
            self._health.pop(call_id, None)
            try:
                value = future.result(timeout=0)
            except RayActorError as exc:
                if p.kind == "start" and not is_actor_death(exc):
                    out.append(StartFailed(p.key, p.generation, short_cause(exc)))
                else:
                    out.append(Died(p.key, p.generation, short_cause(exc)))
                continue
            except Exception as exc:  # RayTaskError (the remote method raised) or anything else
                out.append(self._task_error(p, exc))
                continue
            out.extend(self._value(p, value))
        for call_id, p in list(self._health.items()):
            if p.deadline is not None and now >= p.deadline:
                del self._health[call_id]
                self._pending.pop(call_id, None)
                out.append(HealthTimeout(p.key, p.generation))
        return out

    @staticmethod
    def _task_error(p: _Pending, exc: BaseException) -> Observation:
        cause = short_cause(exc)
        if p.kind == "start":
            return StartFailed(p.key, p.generation, cause)
        if p.kind == "health":
            return HealthReport(p.key, p.generation, ok=False, error=cause)
        if p.kind == "config":
            return ConfigResult(p.key, p.generation, applied=False, config_hash=p.extra, error=cause)
        if p.kind == "drain":
            return Drained(p.key, p.generation)
        return Died(p.key, p.generation, cause)

    @staticmethod
    def _value(p: _Pending, v: Any) -> list[Observation]:
        if p.kind == "start":
            return [Ready(p.key, p.generation, v["pid"], v["node_id"], v.get("version"))]
        if p.kind == "health":
            return [
                HealthReport(
                    p.key,
                    p.generation,
                    ok=v["ok"],
                    tasks=v.get("tasks", 0),
                    rss_mb=v.get("rss_mb", 0.0),
                    phase=v.get("phase"),
                    progress=v.get("progress") or {},
                    recycle_requested=v.get("recycle_requested"),
                    error=v.get("error"),
                    browser=v.get("browser"),
                )
            ]
        if p.kind == "drain":
            return [Drained(p.key, p.generation)]
        if p.kind == "alive":
            return [Alive(p.key, p.generation)]
        if p.kind == "config":
            return [ConfigResult(p.key, p.generation, v["applied"], p.extra, v.get("error"))]
        return []  # watch returned: the slot stopped on purpose


class WorkQueueCalls:
    """The batch pools' work queue actors: created on demand (one per pool, detached, on the head node).

    Each queue has a ``watch`` call outstanding (as slots do), so its death is noticed at once:
    :meth:`poll` (every supervisor step) recreates a queue that died — the new one reloads its jobs
    from the store — backing off when one keeps dying at once. ``pool_spec`` gives a pool's spec (its
    ``work_queue`` options and whether it is paused) for each queue created.
    """

    def __init__(self, namespace: str, store_url: str | None = None,
                 pool_spec: Callable[[str], PoolSpec | None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.namespace = namespace
        self.store_url = store_url
        self.pool_spec = pool_spec or (lambda _pool: None)
        self.monotonic = monotonic
        self._queues: dict[str, Any] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._born: dict[str, float] = {}
        self._finished: deque[tuple[str, Any, Any]] = deque()  # (pool, handle, its watch call)
        self._due: dict[str, float] = {}  # pools whose queue died → when to recreate it
        self._backoff: dict[str, float] = {}
        self._causes: dict[str, str] = {}  # pools whose queue died → why, until it is recreated
        self._recreated: list[tuple[str, str]] = []
        self.recreated = 0

    def pools(self) -> list[str]:
        return list(dict.fromkeys([*self._queues, *self._due]))

    def _opts(self, pool: str) -> tuple[dict[str, Any], bool]:
        spec = self.pool_spec(pool)
        if spec is None:
            return {}, False
        return spec.work_queue.model_dump(mode="json"), spec.paused

    def ensure(self, pool: str) -> None:
        if pool not in self._queues:
            self._due.pop(pool, None)
            self._create(pool)
            return
        opts, paused = self._opts(pool)
        if opts and opts != self._options.get(pool):  # the pool's work_queue options changed
            self._options[pool] = opts
            self._queues[pool].configure.remote(opts, paused)

    def _create(self, pool: str) -> None:

        opts, paused = self._opts(pool)
        handle = WorkQueue.options(
            name=workqueue_name(pool),
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources={HEAD_RESOURCE: 0.001},
            max_concurrency=10_000,  # every slot keeps a lease long-polling, drivers a fetch
        ).remote(pool, self.store_url, self.namespace, opts, paused)
        self._queues[pool], self._options[pool], self._born[pool] = handle, opts, self.monotonic()
        if pool in self._causes:  # it replaces one that died (here or through ensure)
            self._recreated.append((pool, self._causes.pop(pool)))
            self.recreated += 1
        watch = handle.watch.remote().future()
        watch.add_done_callback(lambda f, pool=pool, handle=handle: self._finished.append((pool, handle, f)))

    def poll(self) -> list[tuple[str, str]]:
        """Recreate the queues that died (never blocks); returns ``(pool, cause)`` for each recreated."""
        now = self.monotonic()
        while self._finished:
            pool, handle, watch = self._finished.popleft()
            if self._queues.get(pool) is not handle:
                continue  # removed or replaced meanwhile
            del self._queues[pool]
            try:
                watch.result(timeout=0)
                continue  # closed on purpose (purged)
            except Exception as exc:
                cause = short_cause(exc)
            # at once the first time; a queue that keeps dying right after it starts backs off (0.5 s → 10 s)
            lived = now - self._born.get(pool, now)
            backoff = 0.0 if lived > 30.0 or pool not in self._backoff else min(max(self._backoff[pool] * 2, 0.5), 10.0)
            self._backoff[pool] = backoff
            self._due[pool] = now + backoff
            self._causes[pool] = cause
            log.warning("work queue of pool %s died (%s); recreating it", pool, cause)
        for pool, due in list(self._due.items()):
            if now >= due:
                del self._due[pool]
                self._create(pool)
        out, self._recreated = self._recreated, []
        return out

    def set_paused(self, pool: str, paused: bool) -> None:
        wq = self._queues.get(pool)
        if wq is not None:
            wq.set_paused.remote(paused)

    def release(self, pool: str, lessee: str, cause: str) -> None:
        """Hand the items leased by ``lessee`` (a slot actor's name) back to the queue, if it has one.
        (A queue that is being recreated finds such a lessee gone when it reloads.)"""
        wq = self._queues.get(pool)
        if wq is not None:
            wq.release.remote(lessee, cause)

    def lessees(self, pool: str, timeout_s: float = 10) -> list[str]:
        return ray.get(self._queues[pool].lessees.remote(), timeout=timeout_s)

    def remove(self, pool: str, timeout_s: float = 2.0) -> None:
        """Kill the pool's queue and delete its copy in the store (the pool was removed)."""
        wq = self._queues.pop(pool, None)
        known = wq is not None or self._due.pop(pool, None) is not None
        self._causes.pop(pool, None)
        self._options.pop(pool, None)
        purged = False
        if wq is not None:
            ref = wq.purge.remote()
            ready, _ = ray.wait([ref], timeout=timeout_s)
            try:
                purged = bool(ready) and bool(ray.get(ready[0], timeout=0))
            except Exception as exc:  # dead already, or the store is down
                log.debug("purge of work queue %s: %s", pool, exc)
            ray.kill(wq, no_restart=True)
        if known and not purged and self.store_url:
            try:
                work_log = open_work_log(self.store_url, self.namespace)
                try:
                    work_log.drop(pool)
                finally:
                    work_log.close()
            except Exception as exc:
                log.warning("could not delete the stored work of removed pool %s: %s", pool, exc)

    def remove_all(self) -> None:
        for pool in self.pools():
            self.remove(pool)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or the deadline passes (driver-side helper)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
