"""Every Ray call the supervisor makes to slot actors, work queues and the cluster, in thin wrappers.

The supervisor's deciding code (:mod:`fleet_ray.control.reconcile`, :mod:`fleet_ray.control.lifecycle`) never imports
Ray; it receives :class:`~fleet_ray.control.lifecycle.Observation` values from :meth:`SlotCalls.poll` and gives
actions back, which the supervisor carries out through the methods here. Polling never blocks:
``ray.wait(..., timeout=0)`` over every outstanding call. :class:`WorkQueueCalls` does the same for
batch pools' work queues. Unit tests hand the supervisor :class:`fleet_ray.testing.FakeSlotCalls` and
:class:`fleet_ray.testing.FakeWorkQueues` instead: same methods, no Ray.

**Unavailable is not dead.** A call that fails with ``ActorUnavailableError`` (Ray: "temporarily
unavailable" — the connection to the actor broke and the GCS has not said it died: TCP connections
reset, the host unreachable, or a host that just lost power) becomes
:class:`~fleet_ray.control.lifecycle.Unreachable`, never ``Died``. Its watch (and a drain or start
call in flight) is issued again after a short, doubling backoff; the supervisor re-checks it with
health checks; and :meth:`SlotCalls.confirm` (run in a thread beside the node list) asks the GCS for
the actor's state, so a slot Ray knows is dead becomes ``Died`` at once. A slot whose node Ray marks
dead is dead too (the supervisor reads that from :meth:`SlotCalls.nodes`). A health check that times
out is judged by its host: if anything on that node answered since the check went out, or a probe
task pinned to the node answers, the slot is hung (``HealthTimeout``: unhealthy, recycled); if the
host doesn't answer either, or the wrapper doesn't know the slot's node (so it can't ask), the slot is
unreachable (the host may be partitioned: replacing it could leave two live actors for one position).

**A kill is not a death either.** ``ray.kill`` marks the actor ``DEAD`` in the GCS at once and the GCS
sends the kill to the worker once; callers then get ``ActorDiedError`` from the GCS's word, whether or not
the kill arrived, and one lost in a partition leaves the process running after it heals. So a slot
killed while it can't be reached (``kill(..., confirm=True)``) is reported
:class:`~fleet_ray.control.lifecycle.Gone` -- and its position freed -- only on evidence from its host's
side: its node's raylet reported the worker process exited (the GCS's worker table), Ray marked its node
dead, or a reaper task on its host found the process gone or killed it (issued while the worker table
still says the worker lives; the pid it kills is the one the raylet registered for that worker).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import ray
import ray._private.state
from ray._raylet import ActorID, WorkerID
from ray.core.generated import gcs_pb2
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fleet_ray.actors.browser_slot import browser_slot_class
from fleet_ray.actors.slot import SlotActor
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
from fleet_ray.control.reconcile import NodeView
from fleet_ray.names import HEAD_RESOURCE, parse_slot_actor_name, slot_actor_name, workqueue_name
from fleet_ray.ray_boundary import short_cause
from fleet_ray.redact import redact_url
from fleet_ray.spec.models import PoolSpec
from fleet_ray.store import open_work_log

from .packaging import resolve_in_env, runtime_env_for
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

REARM_S = 0.5  # a watch (drain, start) that failed "unavailable" is issued again after this, doubling ...
REARM_MAX_S = 5.0  # ... up to this
REARMED = ("watch", "drain", "start", "alive")  # idempotent calls issued again after "unavailable"
PROBE_TIMEOUT_S = 3.0  # a host that doesn't run a probe task within this (or the check's timeout) is silent
REAP_AFTER_S = 5.0  # a kill sent while unreachable that its raylet hasn't confirmed this long after: reap
REAP_TIMEOUT_S = 10.0  # a reaper task that doesn't answer within this is written off (another goes later)
NO_SLOT: SlotKey = ("", -1)


@ray.remote(num_cpus=0, max_retries=0)
def host_probe() -> int:
    """Runs on the node it is pinned to: the node's raylet and a worker there answer."""
    return os.getpid()


@ray.remote(num_cpus=0, max_retries=0)
def reap_worker(pid: int) -> str:
    """Runs on the host of a slot actor killed while it couldn't be reached, whose worker the GCS's
    worker table still says is alive under ``pid``: kills that process if it is still a Ray worker.
    ``gone``: no such process (or the pid is no Ray worker's any more); ``killed``: it was, and is not."""
    try:
        proc = psutil.Process(pid)
        title = " ".join(proc.cmdline())
        if not (title.startswith("ray::") or "default_worker.py" in title):
            return "gone"
        proc.kill()
        proc.wait(timeout=5)
    except psutil.NoSuchProcess:
        return "gone"
    return "killed"


def gcs_worker_fate(actor_id: str, name: str, namespace: str, dead_nodes: set[str]) -> tuple[str, str, int | None]:
    """What the GCS knows of the process of a killed actor: ``(actor id, evidence it is gone or "",
    its worker's pid while the worker table says it lives)``. ``actor_id`` "" finds the actor by name
    (a restarted supervisor knows only that). Blocking: called from a thread."""
    accessor = ray._private.state.state._connect_and_get_accessor()
    data = None
    if actor_id:
        raw = accessor.get_actor_info(ActorID(bytes.fromhex(actor_id)))
        data = gcs_pb2.ActorTableData.FromString(raw) if raw else None
    else:
        for raw in accessor.get_actor_table(None, None):
            row = gcs_pb2.ActorTableData.FromString(raw)
            if row.name == name and row.ray_namespace == namespace and (data is None or row.start_time > data.start_time):
                data = row
    if data is None:
        return actor_id, "", None
    actor_id = data.actor_id.hex()
    node = (data.address.node_id or data.node_id).hex()
    if node and node in dead_nodes:
        return actor_id, f"Ray marked node {node[:12]} dead", None
    worker = data.address.worker_id
    if not worker.strip(b"\0"):
        if data.state == gcs_pb2.ActorTableData.DEAD:
            return actor_id, "it never had a process (Ray had not placed it yet)", None
        return actor_id, "", None
    raw = accessor.get_worker_info(WorkerID(worker))
    if not raw:
        return actor_id, "", None
    info = gcs_pb2.WorkerTableData.FromString(raw)
    if not info.is_alive:
        detail = " ".join(info.exit_detail.split())[:200]
        return actor_id, (f"its node's raylet reported its worker process (pid {info.pid}) exited"
                          + (f": {detail}" if detail else "")), None
    return actor_id, "", info.pid or None


def gcs_actor_state(actor_id: str) -> tuple[str, str, bool] | None:
    """The GCS's view of an actor: ``(state, death cause, died with its node)``, or None if unknown.

    Ray's public ``ray.util.state.get_actor`` goes through the dashboard's API server (not every cluster
    runs one, the test clusters don't); this asks the GCS directly, as ``ray._private.state.actors``
    does (``ALIVE``, ``RESTARTING``, ``DEAD``, ...). Blocking: called from a thread."""
    try:
        info = ray._private.state.state.actor_table(actor_id)
    except Exception as exc:  # the GCS is restarting, or this Ray changed the private API
        log.debug("actor table of %s: %s", actor_id, exc)
        return None
    if not info:
        return None
    cause, node_died = "", False
    death = info.get("DeathCause")
    try:
        which = death.WhichOneof("context") if death is not None else None
        if which == "actor_died_error_context":
            ctx = death.actor_died_error_context
            cause = ctx.error_message
            node_died = ctx.reason == ctx.NODE_DIED
        elif which:
            cause = str(getattr(death, which)).strip()
    except Exception:  # not the proto this code knows
        cause = str(death or "")
    return str(info.get("State", "")), redact_url(" ".join(cause.split()))[:500], node_died


def death_cause(exc: BaseException) -> tuple[str, bool]:
    """A dead actor's error as one line, and whether it died with its node (Ray's message says so)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    node = [line for line in lines if "its node has died" in line or "node was terminated" in line]
    if node:
        return redact_url("its host was lost: " + " ".join(node))[:500], True
    return short_cause(exc), False


@dataclass
class _Doomed:
    """A slot actor killed while it couldn't be reached, until its host's side confirms the process is gone."""

    name: str
    actor_id: str = ""  # hex; "" until found by name (a restarted supervisor knows only the name)
    node: str = ""
    pid: int | None = None  # its worker's pid, while the GCS's worker table says the worker lives
    reaper: int | None = None  # the call id of a reaper task in flight
    reap_at: float | None = None  # no reaper before this (the supervisor's clock; set when first seen)


@dataclass
class _Pending:
    kind: str  # alive | start | watch | health | drain | config | probe | reap
    key: SlotKey
    generation: int
    deadline: float | None = None
    extra: Any = None
    issued: float = 0.0  # when it went out (the supervisor's clock)
    node: str = ""  # probe: the node it is pinned to


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
        # reachability: which node each slot is on, when each node last answered anything, the slots
        # that stopped answering (since when), calls to issue again, host probes (node → its call) and
        # the timed-out health checks waiting for their host's probe, and deaths the GCS confirmed
        self._node_of: dict[SlotKey, str] = {}
        self._heard: dict[str, float] = {}
        self._suspects: dict[tuple[SlotKey, int], float] = {}
        self._rearm: list[tuple[float, str, SlotKey, int]] = []
        self._rearm_delay: dict[tuple[SlotKey, int, str], float] = {}
        self._probes: dict[str, int] = {}  # node → the call id of its probe in flight (expired at its deadline)
        self._held: dict[str, list[_Pending]] = {}
        self._confirmed: deque[Observation] = deque()
        self._doomed: dict[tuple[SlotKey, int], _Doomed] = {}  # killed while unreachable, not confirmed gone

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
                    death_reason="" if n.get("Alive") else str(n.get("DeathReasonMessage") or ""),
                )
            )
        return out

    def confirm(self) -> None:
        """Ask the GCS about every slot that stopped answering: one Ray says is dead is reported
        ``Died`` by the next :meth:`poll`. Blocking (a GCS round trip per slot): run it in a thread."""
        for sk in dict(self._suspects):
            key, generation = sk
            handle = self._handle(key, generation)
            if handle is None:
                self._suspects.pop(sk, None)
                continue
            found = gcs_actor_state(handle._actor_id.hex())
            if found is None or found[0] != "DEAD":
                continue  # ALIVE (or restarting): unreachable is not dead
            state, cause, node_died = found
            if self._suspects.pop(sk, None) is not None:
                why = cause or "no cause given"
                text = f"its host was lost: {why}" if node_died else f"Ray says the actor is dead: {why}"
                self._confirmed.append(Died(key, generation, text, host_lost=node_died))
        self._confirm_kills()

    def _confirm_kills(self) -> None:
        """Slots killed while unreachable: a process its raylet says exited, or on a node Ray marked
        dead, is :class:`Gone`; one the worker table says lives gets its pid (for the reaper)."""
        if not self._doomed:
            return
        try:
            dead_nodes = {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
        except Exception as exc:  # the GCS is restarting
            log.debug("node list: %s", exc)
            return
        for sk, d in list(self._doomed.items()):
            try:
                d.actor_id, why, d.pid = gcs_worker_fate(d.actor_id, d.name, self.namespace, dead_nodes)
            except Exception as exc:  # the GCS is restarting, or this Ray changed the private API
                log.debug("worker of %s: %s", d.name, exc)
                continue
            if why and self._doomed.pop(sk, None) is not None:
                self._confirmed.append(Gone(sk[0], sk[1], why))

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

    def _track(self, ref: ray.ObjectRef, p: _Pending) -> int:
        call_id = self._next_id
        self._next_id += 1
        future = ref.future()
        self._pending[call_id] = (p, future)
        if p.kind == "health":
            self._health[call_id] = p
        future.add_done_callback(lambda _f, call_id=call_id: self._finished.append(call_id))
        return call_id

    def _handle(self, key: SlotKey, generation: int) -> Any | None:
        entry = self._handles.get(key)
        return entry[1] if entry and entry[0] == generation else None

    def health(self, key: SlotKey, generation: int, timeout_s: float, now: float, node_id: str = "") -> None:
        """A health check; ``node_id`` is where the supervisor knows the slot runs (for judging a
        timeout by its host)."""
        h = self._handle(key, generation)
        if h is not None:
            if node_id:
                self._node_of[key] = node_id
            self._track(h.health.remote(), _Pending("health", key, generation, now + timeout_s, issued=now))

    def drain(self, key: SlotKey, generation: int) -> None:
        h = self._handle(key, generation)
        if h is not None:
            self._track(h.drain.remote(), _Pending("drain", key, generation))

    def reconfigure(self, key: SlotKey, generation: int, config: dict, config_hash: str) -> None:
        h = self._handle(key, generation)
        if h is not None:
            self._track(h.reconfigure.remote(config), _Pending("config", key, generation, extra=config_hash))

    def kill(self, key: SlotKey, generation: int, confirm: bool = False, node_id: str = "") -> None:
        """Kill a slot actor. ``confirm``: it can't be reached, so the kill may not reach its process:
        it is watched until its host's side says the process is gone (a :class:`Gone` from
        :meth:`poll`), and reaped there if the kill never arrived."""
        entry = self._handles.get(key)
        if confirm:
            actor_id = entry[1]._actor_id.hex() if entry and entry[0] == generation else ""
            self._doomed.setdefault((key, generation), _Doomed(slot_actor_name(key[0], key[1], generation),
                                                               actor_id, node_id or self._node_of.get(key, "")))
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
        self._forget(key, generation)

    def await_death(self, key: SlotKey, generation: int, node_id: str = "") -> None:
        """A slot killed while unreachable before this wrapper existed (the supervisor restarted): watch
        for its confirmation as :meth:`kill` with ``confirm`` does (found by its name). Repeatable."""
        if (key, generation) not in self._doomed:
            self._doomed[(key, generation)] = _Doomed(slot_actor_name(key[0], key[1], generation), node=node_id)

    def _forget(self, key: SlotKey, generation: int) -> None:
        self._suspects.pop((key, generation), None)
        self._rearm = [r for r in self._rearm if (r[2], r[3]) != (key, generation)]
        for k in [k for k in self._rearm_delay if (k[0], k[1]) == (key, generation)]:
            del self._rearm_delay[k]
        for node, held in list(self._held.items()):
            self._held[node] = [p for p in held if (p.key, p.generation) != (key, generation)]
        self._node_of.pop(key, None)

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
        """Collect every finished call without blocking; judge overdue health checks; issue again the
        calls that failed "unavailable" and are due; report the deaths :meth:`confirm` found."""
        out: list[Observation] = []
        while self._confirmed:
            out.append(self._confirmed.popleft())
        while self._finished:
            call_id = self._finished.popleft()
            entry = self._pending.pop(call_id, None)
            if entry is None:
                continue  # its slot was killed meanwhile
            p, future = entry
            if p.kind == "probe":
                out.extend(self._probe_done(call_id, p, future, now))
                continue
            if p.kind == "reap":
                out.extend(self._reap_done(p, future, now))
                continue
            self._health.pop(call_id, None)
            try:
                value = future.result(timeout=0)
            except RayTaskError as exc:  # the remote method raised: the slot answered
                self._answered(p, now)
                out.append(self._task_error(p, exc))
                continue
            except ActorUnavailableError as exc:  # no answer, and Ray hasn't said it's dead
                out.append(self._unavailable(p, exc, now))
                continue
            except RayActorError as exc:  # Ray says the actor is dead (ActorDiedError)
                self._suspects.pop((p.key, p.generation), None)
                cause, host_lost = death_cause(exc)
                out.append(Died(p.key, p.generation, cause, host_lost=host_lost))
                continue
            except Exception as exc:  # anything else (an object lost, ...)
                out.append(self._task_error(p, exc))
                continue
            if p.kind in ("alive", "start") and isinstance(value, dict) and value.get("node_id"):
                self._node_of[p.key] = value["node_id"]
            self._answered(p, now)
            out.extend(self._value(p, value))
        self._issue_again(now)
        self._judge_health(now, out)
        self._reap(now)
        return out

    # -- kills that may not have arrived ---------------------------------------------------------
    def _reap(self, now: float) -> None:
        """A reaper task on the host of each killed slot whose worker its raylet still says lives
        (the kill may have been lost in a partition: Ray doesn't send it again). One in flight each."""
        for sk, d in list(self._doomed.items()):  # (confirm() pops from it in its thread)
            if d.reap_at is None:
                d.reap_at = now + REAP_AFTER_S
            if d.reaper is not None:
                entry = self._pending.get(d.reaper)
                if entry is not None and now < (entry[0].deadline or 0.0):
                    continue
                self._pending.pop(d.reaper, None)  # written off: its host didn't run it in time
                d.reaper, d.reap_at = None, now + REAP_AFTER_S
            if d.pid is None or not d.node or now < d.reap_at:
                continue
            try:
                strategy = NodeAffinitySchedulingStrategy(d.node, soft=False)
                ref = reap_worker.options(scheduling_strategy=strategy).remote(d.pid)
            except Exception as exc:  # not a node id Ray takes
                log.debug("reaper for %s: %s", d.name, exc)
                d.reap_at = now + REAP_AFTER_S
                continue
            d.reaper = self._track(ref, _Pending("reap", sk[0], sk[1], now + REAP_TIMEOUT_S, extra=d.pid,
                                                 issued=now, node=d.node))

    def _reap_done(self, p: _Pending, future: Any, now: float) -> list[Observation]:
        d = self._doomed.get((p.key, p.generation))
        if d is None:
            return []
        d.reaper, d.reap_at = None, now + REAP_AFTER_S
        try:
            verdict = future.result(timeout=0)
        except Exception as exc:  # it could not run there (the host is cut off, or gone)
            log.debug("reaper for %s failed: %s", d.name, short_cause(exc))
            return []
        if self._doomed.pop((p.key, p.generation), None) is None:
            return []  # confirm() found it gone meanwhile
        if verdict == "killed":
            why = f"a task on its host killed its process (pid {p.extra}): the kill had not reached it"
        else:
            why = f"a task on its host found its process (pid {p.extra}) gone"
        return [Gone(p.key, p.generation, why)]

    # -- reachability ----------------------------------------------------------------------------
    def _answered(self, p: _Pending, now: float) -> None:
        """The slot answered a call: it (and its host) can be reached."""
        sk = (p.key, p.generation)
        self._suspects.pop(sk, None)
        for k in [k for k in self._rearm_delay if (k[0], k[1]) == sk]:
            del self._rearm_delay[k]
        node = self._node_of.get(p.key)
        if node:
            self._heard[node] = now

    def _unavailable(self, p: _Pending, exc: BaseException, now: float) -> Observation:
        sk = (p.key, p.generation)
        self._suspects.setdefault(sk, now)
        if p.kind in REARMED and self._handle(p.key, p.generation) is not None:
            delay = self._rearm_delay.get((*sk, p.kind), REARM_S)
            self._rearm_delay[(*sk, p.kind)] = min(delay * 2, REARM_MAX_S)
            self._rearm.append((now + delay, p.kind, p.key, p.generation))
        return Unreachable(p.key, p.generation, short_cause(exc), call=p.kind)

    def _issue_again(self, now: float) -> None:
        if not self._rearm:
            return
        due = [r for r in self._rearm if r[0] <= now]
        if not due:
            return
        self._rearm = [r for r in self._rearm if r[0] > now]
        for _, kind, key, generation in due:
            h = self._handle(key, generation)
            if h is not None:
                method = {"alive": h.info, "start": h.start, "watch": h.watch, "drain": h.drain}[kind]
                self._track(method.remote(), _Pending(kind, key, generation, issued=now))

    def _judge_health(self, now: float, out: list[Observation]) -> None:
        """Overdue health checks: hung (the host answers) or unreachable (it doesn't either)."""
        self._expire_probes(now, out)
        for call_id, p in list(self._health.items()):
            if p.deadline is None or now < p.deadline:
                continue
            del self._health[call_id]
            self._pending.pop(call_id, None)
            node = self._node_of.get(p.key, "")
            if not node:
                # nothing says where it runs, so its host can't be asked: no answer can't be told from
                # a host cut off, and calling it hung would replace what may be alive (and, for an
                # unreachable slot, make it flap back to running)
                out.append(self._silent(p, ""))
                continue
            if self._heard.get(node, float("-inf")) >= p.issued:
                out.append(HealthTimeout(p.key, p.generation))  # its host answers: the slot is hung
                continue
            if node not in self._probes and not self._probe(node, now, max(PROBE_TIMEOUT_S, p.deadline - p.issued)):
                out.append(self._silent(p, node))
                continue
            self._held.setdefault(node, []).append(p)  # judged by the probe in flight (one per node)

    def _expire_probes(self, now: float, out: list[Observation]) -> None:
        """A probe past its deadline has its answer: the host is silent. It is forgotten then (its late
        answer ignored), so the next timed-out check on that node sends a probe of its own instead of
        being judged by one that may never resolve."""
        for node, call_id in list(self._probes.items()):
            entry = self._pending.get(call_id)
            if entry is not None and now < (entry[0].deadline or 0.0):
                continue
            del self._probes[node]
            self._pending.pop(call_id, None)
            out.extend(self._silent(p, node) for p in self._held.pop(node, []))

    def _probe(self, node: str, now: float, timeout_s: float) -> bool:
        """A task pinned to ``node``: whether the host answers at all (one in flight per node)."""
        try:
            ref = host_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        except Exception as exc:  # not a node id Ray takes
            log.debug("probe of node %s: %s", node, exc)
            return False
        self._probes[node] = self._track(ref, _Pending("probe", NO_SLOT, 0, now + timeout_s, issued=now, node=node))
        return True

    def _probe_done(self, call_id: int, p: _Pending, future: Any, now: float) -> list[Observation]:
        if self._probes.get(p.node) == call_id:
            del self._probes[p.node]
        held = self._held.pop(p.node, [])
        try:
            future.result(timeout=0)
        except Exception as exc:  # it could not run there (the node is dead or going)
            log.debug("probe of node %s failed: %s", p.node, short_cause(exc))
            return [self._silent(h, p.node) for h in held]
        self._heard[p.node] = now
        return [HealthTimeout(h.key, h.generation) for h in held if self._handle(h.key, h.generation) is not None]

    def _silent(self, p: _Pending, node: str) -> Observation:
        self._suspects.setdefault((p.key, p.generation), p.deadline or 0.0)
        timeout = (p.deadline or 0.0) - p.issued
        host = (f"its host (node {node[:12]}) doesn't answer either" if node
                else "where it runs is not known (its host can't be asked)")
        return Unreachable(p.key, p.generation, f"no answer to a health check in {timeout:g}s, and {host}",
                           call="health")

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
                    concurrency=v.get("concurrency"),
                )
            ]
        if p.kind == "drain":
            return [Drained(p.key, p.generation)]
        if p.kind == "alive":
            return [Alive(p.key, p.generation, str(v.get("node_id") or "") if isinstance(v, dict) else "")]
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
