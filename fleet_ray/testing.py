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
    Gone,
    HealthReport,
    HealthTimeout,
    Observation,
    Ready,
    SlotKey,
    StartFailed,
    Unreachable,
)
from fleet_ray.control.pool_scaling import ResourceRequest, SignalReading
from fleet_ray.control.reconcile import NodeView
from fleet_ray.errors import StoreUnavailable
from fleet_ray.names import HEAD_RESOURCE, slot_actor_name
from fleet_ray.spec.models import PoolSpec
from fleet_ray.store.memory import MemoryStore

__all__ = ["FakeClock", "FakeResourceRequests", "FakeScaleSignals", "FakeSlot", "FakeSlotCalls", "FakeWorkQueues",
           "FlakyStore", "MemoryStore"]

#: what Ray's ``ActorUnavailableError`` says after the connections to a slot's host reset
UNAVAILABLE = ("ActorUnavailableError: The actor 0123 is unavailable: The actor is temporarily unavailable: "
               "RpcError: RPC error: Socket closed rpc_code: 14.")


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

    Hosts that can't be reached, as :class:`fleet_ray.actors.handles.SlotCalls` reports them:
    :meth:`reset_connections` (every call to a node's slots fails "temporarily unavailable", as Ray's
    ``ActorUnavailableError`` after a TCP reset), :meth:`partition` (a node answers nothing: its
    slots' health checks time out, and so does the probe of the host), :attr:`hung` (a slot doesn't
    answer its health checks though its host does), :attr:`busy` (a slot's drain waits for its
    in-flight work), :meth:`heal` (the node answers again; what it
    held back is answered), :meth:`lose_node` (Ray marks the node dead) and :meth:`gcs_dead` (the GCS
    says the actor is dead: found by the next :meth:`confirm`). A kill with ``confirm`` (a slot that
    can't be reached) doesn't reach a process on a host that is cut off: it stays in :attr:`live` until
    the host answers again (a reaper on it kills the process) or is lost, and :meth:`confirm` then
    reports it :class:`~fleet_ray.control.lifecycle.Gone`, as the real one does. Slots are placed on ``node_for[pool]``
    (default :attr:`node_id`; ``""``: the wrapper never learns where they run, so a timed-out health
    check can't ask the host and is reported unreachable, as the real one does).
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
    node_for: dict[str, str] = field(default_factory=dict)  # pool -> node its slots are placed on
    hung: set[SlotKey] = field(default_factory=set)  # positions whose health checks time out (host answers)
    busy: set[SlotKey] = field(default_factory=set)  # positions whose drains wait (for in-flight work)
    resetting: set[str] = field(default_factory=set)  # nodes whose calls fail "temporarily unavailable"
    partitioned: set[str] = field(default_factory=set)  # nodes that answer nothing
    health_calls: list[tuple[SlotKey, int]] = field(default_factory=list)
    _handles: dict[SlotKey, tuple[int, FakeSlot]] = field(default_factory=dict)
    _queued: list[Observation] = field(default_factory=list)
    _next_pid: int = 1000
    _where: dict[SlotKey, str] = field(default_factory=dict)  # position -> node of its current actor
    _waiting: list[tuple[str, SlotKey, int, float, float]] = field(default_factory=list)  # held calls
    _dead_in_gcs: set[tuple[SlotKey, int]] = field(default_factory=set)
    _suspects: set[tuple[SlotKey, int]] = field(default_factory=set)
    _located: set[tuple[SlotKey, int]] = field(default_factory=set)  # actors whose node the wrapper knows
    _doomed: dict[tuple[SlotKey, int], tuple[str, str]] = field(default_factory=dict)  # killed unconfirmed

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

    def add_node(self, node_id: str, resources: dict[str, float] | None = None, **labels: str) -> NodeView:
        view = NodeView(node_id, True, resources or {"CPU": 16.0}, labels)
        self.nodes_seen.append(view)
        return view

    def confirm(self) -> None:
        """What the real one asks the GCS: a slot that stopped answering and is dead there is ``Died``;
        one killed while unreachable whose process is gone (or that a reaper on its host, answering
        again, kills now) is ``Gone``."""
        for sk in sorted(self._suspects & self._dead_in_gcs):
            self._suspects.discard(sk)
            self._queued.append(Died(sk[0], sk[1], "Ray says the actor is dead: the actor's worker process died"))
        dead = {n.node_id for n in self.nodes_seen if not n.alive}
        for sk, (name, node) in sorted(self._doomed.items()):
            if node in dead:
                why = f"Ray marked node {node[:12]} dead"
            elif name not in self.live:
                why = "its node's raylet reported its worker process exited"
            elif self._answers(node):
                self.live.pop(name)
                why = "a task on its host killed its process: the kill had not reached it"
            else:
                continue  # alive where nothing reaches it
            del self._doomed[sk]
            self._queued.append(Gone(sk[0], sk[1], why))

    # -- hosts that can't be reached -----------------------------------------------------------------
    def on_node(self, node: str) -> list[SlotKey]:
        return sorted(k for k, n in self._where.items() if n == node and k in self._handles)

    def reset_connections(self, node: str) -> None:
        """Every connection to ``node`` resets (its processes alive): each slot's watch fails
        "temporarily unavailable" at the next poll, and so does every call until :meth:`heal`."""
        self.resetting.add(node)
        for key in self.on_node(node):
            generation = self._handles[key][0]
            self._suspects.add((key, generation))
            self._queued.append(Unreachable(key, generation, UNAVAILABLE, call="watch"))

    def partition(self, node: str) -> None:
        """``node`` answers nothing (link down): calls to its slots wait; health checks time out and
        the host doesn't answer a probe either."""
        self.partitioned.add(node)

    def heal(self, node: str) -> None:
        """``node`` answers again: the calls it held back are answered (a health check that is past its
        deadline was judged at the deadline already, as the real wrapper does)."""
        self.resetting.discard(node)
        self.partitioned.discard(node)
        held, self._waiting = self._waiting, []
        for w in held:
            kind, key, generation = w[0], w[1], w[2]
            slot = self._handle(key, generation)
            if slot is None or self._where.get(key) != node:
                if slot is not None:
                    self._waiting.append(w)
                continue
            if kind == "drain":
                self._queued.append(Drained(key, generation))
            elif key in self.hung:
                self._waiting.append(w)  # a hung slot still doesn't answer
            else:
                error = self.unhealthy.get(key)
                self._queued.append(HealthReport(key, generation, ok=error is None, tasks=slot.tasks, error=error))

    def lose_node(self, node: str, reason: str = "health check failed due to missing too many heartbeats",
                  watch_errors: bool = True) -> None:
        """Ray marks ``node`` dead: every actor on it is gone; with ``watch_errors`` their watch calls
        also fail with ``ActorDiedError`` (Ray's message names the node)."""
        self.nodes_seen = [NodeView(n.node_id, False, n.resources, n.labels, n.is_head, reason)
                           if n.node_id == node else n for n in self.nodes_seen]
        for name, where in self._doomed.values():  # killed while it was cut off: gone with its host
            if where == node:
                self.live.pop(name, None)
        for key in self.on_node(node):
            generation, slot = self._handles[key]
            self.live.pop(slot.name, None)
            self._dead_in_gcs.add((key, generation))
            if watch_errors:
                self._queued.append(Died(key, generation, f"its host was lost: the actor died because its node "
                                                          f"has died. Node Id: {node}", host_lost=True))
        self._waiting = [w for w in self._waiting if self._where.get(w[1]) != node]

    def gcs_dead(self, key: SlotKey) -> None:
        """The position's actor is dead as far as the GCS knows (its process gone), though no call said so."""
        generation, slot = self._handles[key]
        self.live.pop(slot.name, None)
        self._dead_in_gcs.add((key, generation))

    def _answers(self, node: str) -> bool:
        return node not in self.partitioned and node not in self.resetting

    def _reach(self, key: SlotKey) -> str:
        """``ok``, ``reset`` or ``silent``: how the node of ``key``'s actor answers now."""
        node = self._where.get(key, self.node_id)
        if node in self.partitioned:
            return "silent"
        if node in self.resetting:
            return "reset"
        return "ok"

    # -- slot actors -------------------------------------------------------------------------------
    def create(self, key: SlotKey, generation: int, pool: PoolSpec, batch: bool,
               runtime_env: dict | None = None) -> None:
        slot = FakeSlot(slot_actor_name(key[0], key[1], generation), self._pid(), version=pool.version)
        self.live[slot.name] = slot
        self.created.append((key, generation))
        self._where[key] = self.node_for.get(key[0], self.node_id)
        self.attach(key, generation, slot, start=True)

    def attach(self, key: SlotKey, generation: int, handle: Any, start: bool) -> None:
        self._handles[key] = (generation, handle)
        self._where.setdefault(key, self.node_for.get(key[0], self.node_id))
        self.attached.append((key, generation, start))
        if start:
            node = self._where[key]
            if node:  # the start calls' answers say where it runs
                self._located.add((key, generation))
            self._queued.append(Alive(key, generation, node))
            cause = self.failing_starts.get(key[0])
            if cause is not None:
                self._queued.append(StartFailed(key, generation, cause))
            else:
                self._queued.append(Ready(key, generation, handle.pid, node, handle.version))

    def _handle(self, key: SlotKey, generation: int) -> FakeSlot | None:
        entry = self._handles.get(key)
        return entry[1] if entry and entry[0] == generation else None

    def health(self, key: SlotKey, generation: int, timeout_s: float, now: float, node_id: str = "") -> None:
        slot = self._handle(key, generation)
        if slot is None:
            return
        self.health_calls.append((key, generation))
        if node_id:
            self._located.add((key, generation))
        reach = self._reach(key)
        if reach == "reset":
            self._queued.append(Unreachable(key, generation, UNAVAILABLE, call="health"))
        elif reach == "silent" or key in self.hung:
            self._waiting.append(("health", key, generation, now + timeout_s, timeout_s))
        else:
            error = self.unhealthy.get(key)
            self._queued.append(HealthReport(key, generation, ok=error is None, tasks=slot.tasks, error=error))

    def drain(self, key: SlotKey, generation: int) -> None:
        if self._handle(key, generation) is None:
            return
        self.drained.append((key, generation))
        reach = self._reach(key)
        if reach == "reset":
            self._queued.append(Unreachable(key, generation, UNAVAILABLE, call="drain"))
            self._waiting.append(("drain", key, generation, float("inf"), 0.0))  # issued again: answered on heal
        elif reach == "silent" or key in self.busy:
            self._waiting.append(("drain", key, generation, float("inf"), 0.0))
        else:
            self._queued.append(Drained(key, generation))

    def reconfigure(self, key: SlotKey, generation: int, config: dict, config_hash: str) -> None:
        if self._handle(key, generation) is not None:
            self._queued.append(ConfigResult(key, generation, True, config_hash))

    def kill(self, key: SlotKey, generation: int, confirm: bool = False, node_id: str = "") -> None:
        entry = self._handles.get(key)
        if confirm:
            self.await_death(key, generation, node_id)
        if entry and entry[0] == generation:
            del self._handles[key]
            if not confirm or self._answers(self._where.get(key, self.node_id)):  # the kill reaches it
                self.live.pop(entry[1].name, None)
            self.killed.append(entry[1].name)
        self._queued = [o for o in self._queued if (o.key, o.generation) != (key, generation)]
        self._waiting = [w for w in self._waiting if (w[1], w[2]) != (key, generation)]
        self._suspects.discard((key, generation))

    def await_death(self, key: SlotKey, generation: int, node_id: str = "") -> None:
        if (key, generation) not in self._doomed:
            self._doomed[(key, generation)] = (slot_actor_name(key[0], key[1], generation),
                                               node_id or self._where.get(key, self.node_id))

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
        waiting = []
        for w in self._waiting:
            kind, key, generation, deadline, timeout_s = w
            if kind != "health" or now < deadline:
                waiting.append(w)
            elif (key, generation) not in self._located:  # its host can't be asked
                self._suspects.add((key, generation))
                out.append(Unreachable(key, generation, f"no answer to a health check in {timeout_s:g}s, and where "
                                                        "it runs is not known (its host can't be asked)",
                                       call="health"))
            elif self._reach(key) == "silent":
                self._suspects.add((key, generation))
                out.append(Unreachable(key, generation, f"no answer to a health check in {timeout_s:g}s, and its "
                                                        f"host (node {self._where.get(key, '')[:12]}) doesn't answer "
                                                        "either", call="health"))
            else:
                out.append(HealthTimeout(key, generation))  # the host answers: the slot is hung
        self._waiting = waiting
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


@dataclass
class FakeScaleSignals:
    """What autoscaled pools scale on, set by the test (the supervisor's
    :class:`fleet_ray.actors.supervisor_autoscale.RayScaleSignals` without Ray): ``backlog[pool]`` is the
    reading (queued + leased, or a consumer lag), taken now by ``clock``; a pool without one has no reading."""

    clock: Any = None  # the rig's FakeClock
    backlog: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    refreshed: list[dict[str, Any]] = field(default_factory=list)

    def reading(self, pool: str) -> SignalReading | None:
        if pool not in self.backlog:
            return None
        return SignalReading(float(self.backlog[pool]), self.clock() if self.clock else 0.0, self.latency.get(pool))

    async def refresh(self, watching: dict[str, Any]) -> None:
        self.refreshed.append(dict(watching))


@dataclass
class FakeResourceRequests:
    """Ray's autoscaler as the supervisor asks it (``request_resources``): every request sent, in order."""

    sent: list[ResourceRequest] = field(default_factory=list)

    def send(self, request: ResourceRequest) -> None:
        self.sent.append(request)

    @property
    def last(self) -> ResourceRequest | None:
        return self.sent[-1] if self.sent else None
