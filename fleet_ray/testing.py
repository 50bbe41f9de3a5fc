"""Fakes for unit tests. They live in the package so they stay honest: the in-memory store passes the
same contract suite as the real stores, and :class:`FakeSlotCalls` / :class:`FakeWorkQueues` have the
methods of the supervisor's Ray wrappers (:class:`fleet_ray.actors.handles.SlotCalls`,
:class:`fleet_ray.actors.handles.WorkQueueCalls`) without Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet_ray.control.lifecycle import (
    Alive,
    ConfigResult,
    Died,
    Drained,
    HealthReport,
    Observation,
    Ready,
    SlotKey,
    StartFailed,
)
from fleet_ray.control.reconcile import NodeView
from fleet_ray.errors import StoreUnavailable
from fleet_ray.names import HEAD_RESOURCE, slot_actor_name
from fleet_ray.spec.models import PoolSpec
from fleet_ray.store.memory import MemoryStore

__all__ = ["FakeClock", "FakeSlot", "FakeSlotCalls", "FakeWorkQueues", "FlakyStore", "MemoryStore"]


class FakeClock:
    """A clock that only moves when told to (``advance``); call it for the time in seconds."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return int(self.now * 1000)

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FlakyStore:
    """A store that can go away: while ``down``, every call raises :class:`StoreUnavailable` (as a
    Redis that can't be reached does); otherwise calls go to ``inner`` (default: a MemoryStore)."""

    def __init__(self, inner: Any = None):
        self.inner = inner if inner is not None else MemoryStore()
        self.url = self.inner.url
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable(self.url, "connection refused")
            return attr(*args, **kwargs)

        return call


@dataclass
class FakeSlot:
    """A slot actor as the fake sees it: its name and what it reports."""

    name: str
    pid: int
    tasks: int = 0
    version: str | None = None


@dataclass
class FakeSlotCalls:
    """The supervisor's slot calls, answered in memory.

    By default every slot is well: a created (or re-started) slot is alive and ready on the next
    :meth:`poll`, health checks pass, drains finish and configs apply. A test changes that with
    :meth:`die`, :attr:`failing_starts` and :attr:`unhealthy`, and puts actors that outlived a supervisor
    into :attr:`live` (via :meth:`add_live`) before a core recovers.
    """

    node_id: str = "node-1"
    nodes_seen: list[NodeView] = field(default_factory=lambda: [
        NodeView("node-1", True, {"CPU": 16.0, HEAD_RESOURCE: 1.0}, is_head=True)])
    failing_starts: dict[str, str] = field(default_factory=dict)  # pool -> cause of StartFailed
    unhealthy: dict[SlotKey, str] = field(default_factory=dict)  # position -> health error
    live: dict[str, FakeSlot] = field(default_factory=dict)  # actor name -> slot (adoptable)
    created: list[tuple[SlotKey, int]] = field(default_factory=list)
    attached: list[tuple[SlotKey, int, bool]] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)  # actor names
    drained: list[tuple[SlotKey, int]] = field(default_factory=list)
    _handles: dict[SlotKey, tuple[int, FakeSlot]] = field(default_factory=dict)
    _queued: list[Observation] = field(default_factory=list)
    _next_pid: int = 1000

    # -- cluster -----------------------------------------------------------------------------------
    def nodes(self) -> list[NodeView]:
        return list(self.nodes_seen)

    def live_slot_actors(self) -> dict[str, FakeSlot]:
        return dict(self.live)

    def add_live(self, pool: str, index: int, generation: int, tasks: int = 0) -> FakeSlot:
        """A slot actor that is alive before the supervisor (re)starts."""
        slot = FakeSlot(slot_actor_name(pool, index, generation), self._pid(), tasks)
        self.live[slot.name] = slot
        return slot

    def _pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    # -- slot actors -------------------------------------------------------------------------------
    def create(self, key: SlotKey, generation: int, pool: PoolSpec, batch: bool,
               runtime_env: dict | None = None) -> None:
        slot = FakeSlot(slot_actor_name(key[0], key[1], generation), self._pid(), version=pool.version)
        self.live[slot.name] = slot
        self.created.append((key, generation))
        self.attach(key, generation, slot, start=True)

    def attach(self, key: SlotKey, generation: int, handle: Any, start: bool) -> None:
        self._handles[key] = (generation, handle)
        self.attached.append((key, generation, start))
        if start:
            self._queued.append(Alive(key, generation))
            cause = self.failing_starts.get(key[0])
            if cause is not None:
                self._queued.append(StartFailed(key, generation, cause))
            else:
                self._queued.append(Ready(key, generation, handle.pid, self.node_id, handle.version))

    def _handle(self, key: SlotKey, generation: int) -> FakeSlot | None:
        entry = self._handles.get(key)
        return entry[1] if entry and entry[0] == generation else None

    def health(self, key: SlotKey, generation: int, timeout_s: float, now: float) -> None:
        slot = self._handle(key, generation)
        if slot is not None:
            error = self.unhealthy.get(key)
            self._queued.append(HealthReport(key, generation, ok=error is None, tasks=slot.tasks, error=error))

    def drain(self, key: SlotKey, generation: int) -> None:
        if self._handle(key, generation) is not None:
            self.drained.append((key, generation))
            self._queued.append(Drained(key, generation))

    def reconfigure(self, key: SlotKey, generation: int, config: dict, config_hash: str) -> None:
        if self._handle(key, generation) is not None:
            self._queued.append(ConfigResult(key, generation, True, config_hash))

    def kill(self, key: SlotKey, generation: int) -> None:
        entry = self._handles.get(key)
        if entry and entry[0] == generation:
            del self._handles[key]
            self.live.pop(entry[1].name, None)
            self.killed.append(entry[1].name)
        self._queued = [o for o in self._queued if (o.key, o.generation) != (key, generation)]

    def kill_by_name(self, name: str) -> None:
        if self.live.pop(name, None) is not None:
            self.killed.append(name)

    def handle(self, key: SlotKey) -> FakeSlot | None:
        entry = self._handles.get(key)
        return entry[1] if entry else None

    def pid_of(self, key: SlotKey) -> tuple[int, Any] | None:
        return self._handles.get(key)

    def die(self, key: SlotKey, cause: str = "the actor died unexpectedly") -> None:
        """The position's current actor dies: the next poll reports it."""
        generation, slot = self._handles.pop(key)
        self.live.pop(slot.name, None)
        self._queued.append(Died(key, generation, cause))

    # -- observation -------------------------------------------------------------------------------
    def poll(self, now: float) -> list[Observation]:
        out, self._queued = self._queued, []
        return out

    # -- packaged automations ----------------------------------------------------------------------
    @staticmethod
    def upload_package(module_dirs: list[str], scratch_dir: str) -> dict[str, Any]:
        return {"py_modules": list(module_dirs)}

    @staticmethod
    async def resolve_in_env(pool: PoolSpec, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError("FakeSlotCalls does not run packaged pools")


@dataclass
class FakeWorkQueues:
    """Batch pools' work queues, in memory: which exist, paused or not, and the leases handed back."""

    queues: dict[str, bool] = field(default_factory=dict)  # pool -> paused
    leased: dict[str, list[str]] = field(default_factory=dict)  # pool -> lessees (for recovery)
    released: list[tuple[str, str, str]] = field(default_factory=list)  # (pool, lessee, cause)
    dead: list[tuple[str, str]] = field(default_factory=list)  # (pool, cause): recreated at the next poll

    def pools(self) -> list[str]:
        return list(self.queues)

    def ensure(self, pool: str) -> None:
        self.queues.setdefault(pool, False)

    def poll(self) -> list[tuple[str, str]]:
        """Queues recreated since the last poll, with the cause (tests mark one dead with :meth:`died`)."""
        out, self.dead = self.dead, []
        return out

    def died(self, pool: str, cause: str = "SIGKILL") -> None:
        if pool in self.queues:
            self.dead.append((pool, cause))

    def set_paused(self, pool: str, paused: bool) -> None:
        self.queues[pool] = paused

    def release(self, pool: str, lessee: str, cause: str) -> None:
        if pool in self.queues:
            self.released.append((pool, lessee, cause))

    def lessees(self, pool: str, timeout_s: float = 10) -> list[str]:
        return list(self.leased.get(pool, []))

    def remove(self, pool: str) -> None:
        self.queues.pop(pool, None)

    def remove_all(self) -> None:
        self.queues.clear()
