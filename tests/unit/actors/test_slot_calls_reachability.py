"""SlotCalls (actors/handles.py) turning what Ray answers into observations, with fake actor handles
whose calls the test finishes: "temporarily unavailable" is not death, the calls that failed so are
issued again, a timed-out health check is judged by whether its host answers, and the GCS's word
confirms a death. No Ray is started: Ray's exception classes are plain Python."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import Future
from typing import Any

import psutil
import pytest
from ray.core.generated import gcs_pb2
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from fleet_ray.actors import handles
from fleet_ray.actors.handles import REAP_AFTER_S, REAP_TIMEOUT_S, REARM_S, SlotCalls
from fleet_ray.control.lifecycle import Alive, Died, Gone, HealthReport, HealthTimeout, Ready, Unreachable

KEY, OTHER = ("web", 0), ("web", 1)
NODE = "ab" * 28


class Ref:
    def __init__(self) -> None:
        self.fut: Future = Future()

    def future(self) -> Future:
        return self.fut


class Method:
    def __init__(self) -> None:
        self.calls: list[Ref] = []

    def remote(self, *args: Any) -> Ref:
        self.calls.append(Ref())
        return self.calls[-1]

    @property
    def last(self) -> Future:
        return self.calls[-1].fut


class ActorID:
    def hex(self) -> str:
        return "12ab" * 8


class Handle:
    def __init__(self) -> None:
        for name in ("info", "start", "watch", "health", "drain", "reconfigure"):
            setattr(self, name, Method())
        self._actor_id = ActorID()


class Probe:
    """Stands in for the host probe task: ``options(...).remote()`` hands out refs the test finishes."""

    def __init__(self) -> None:
        self.method, self.nodes = Method(), []

    def options(self, scheduling_strategy: Any = None) -> Method:
        self.nodes.append(scheduling_strategy.node_id)
        return self.method


class Gcs:
    """Stands in for what confirm() asks the GCS about killed slots: their nodes and workers."""

    def __init__(self, monkeypatch) -> None:
        self.fate: tuple[str, int | None] = ("", 4242)  # (evidence it is gone, its worker's pid while alive)
        self.asked: list[tuple[str, str]] = []
        monkeypatch.setattr(handles.ray, "nodes", lambda: [{"NodeID": NODE, "Alive": True}])
        monkeypatch.setattr(handles, "gcs_worker_fate", self.worker_fate)

    def worker_fate(self, actor_id: str, name: str, namespace: str, dead_nodes: set[str]):
        self.asked.append((actor_id, name))
        return actor_id or "found-by-name", self.fate[0], self.fate[1]


def unavailable() -> ActorUnavailableError:
    return ActorUnavailableError("The actor is temporarily unavailable: RpcError: RPC error: Socket closed", b"\1" * 16)


def node_died() -> ActorDiedError:
    exc = ActorDiedError()
    exc.error_msg = ("The actor died unexpectedly before finishing this task.\n\tclass_name: SlotActor\n"
                     f"The actor died because its node has died. Node Id: {NODE}\n\tthe actor's node was "
                     "terminated unexpectedly: health check failed due to missing too many heartbeats")
    return exc


@pytest.fixture
def probe(monkeypatch) -> Probe:
    p = Probe()
    monkeypatch.setattr(handles, "host_probe", p)
    return p


@pytest.fixture
def calls() -> SlotCalls:
    return SlotCalls("test", "memory://")


def started(calls: SlotCalls, key=KEY, now: float = 0.0) -> Handle:
    h = Handle()
    calls.attach(key, 1, h, start=True)
    h.info.last.set_result({"pid": 7, "node_id": NODE, "lessee": "x"})
    h.start.last.set_result({"pid": 7, "node_id": NODE, "version": None})
    assert calls.poll(now) == [Alive(key, 1, NODE), Ready(key, 1, 7, NODE, None)]
    return h


def test_an_unavailable_watch_is_unreachable_not_dead_and_is_issued_again(calls):
    h = started(calls)
    h.watch.last.set_exception(unavailable())
    (obs,) = calls.poll(1.0)
    assert isinstance(obs, Unreachable) and obs.call == "watch" and "temporarily unavailable" in obs.cause
    assert len(h.watch.calls) == 1
    calls.poll(1.0 + REARM_S / 2)
    assert len(h.watch.calls) == 1  # not before its backoff
    calls.poll(1.0 + REARM_S)
    assert len(h.watch.calls) == 2  # re-armed: a death is noticed again at once
    h.watch.last.set_exception(unavailable())  # still no answer: the next one waits twice as long
    calls.poll(2.0)
    calls.poll(2.0 + REARM_S)
    assert len(h.watch.calls) == 2
    calls.poll(2.0 + 2 * REARM_S)
    assert len(h.watch.calls) == 3


def test_an_error_the_slot_raised_is_its_answer_even_when_it_is_an_actor_error(calls):
    h = started(calls)
    calls.health(KEY, 1, 3.0, 1.0, node_id=NODE)
    h.health.last.set_exception(RayTaskError("health", "tb", unavailable()).as_instanceof_cause())
    (obs,) = calls.poll(1.5)
    assert isinstance(obs, HealthReport) and not obs.ok


def test_a_death_ray_reports_with_its_node_is_a_lost_host(calls):
    h = started(calls)
    h.watch.last.set_exception(node_died())
    (obs,) = calls.poll(1.0)
    assert isinstance(obs, Died) and obs.host_lost
    assert obs.cause.startswith("its host was lost: The actor died because its node has died.")
    h2 = started(calls, OTHER)
    h2.watch.last.set_exception(ActorDiedError())
    (obs,) = calls.poll(2.0)
    assert isinstance(obs, Died) and not obs.host_lost and obs.cause.startswith("ActorDiedError")


def test_a_timed_out_health_check_is_hung_when_the_host_answered_meanwhile(calls, probe):
    h, sibling = started(calls), started(calls, OTHER)
    calls.health(KEY, 1, 3.0, 10.0, node_id=NODE)
    calls.health(OTHER, 1, 3.0, 10.0, node_id=NODE)
    sibling.health.last.set_result({"ok": True})
    assert isinstance(calls.poll(11.0)[0], HealthReport)
    assert calls.poll(13.0) == [HealthTimeout(KEY, 1)]  # the same host answered after it went out
    assert probe.nodes == [] and h.health.calls


def test_a_timed_out_health_check_waits_for_a_probe_of_its_host(calls, probe):
    started(calls)
    calls.health(KEY, 1, 3.0, 10.0, node_id=NODE)
    assert calls.poll(13.0) == []  # held: is the host there at all?
    assert probe.nodes == [NODE]
    probe.method.last.set_result(4242)  # it is: the slot itself is hung
    assert calls.poll(13.5) == [HealthTimeout(KEY, 1)]


def test_a_host_that_doesnt_answer_its_probe_makes_its_slots_unreachable(calls, probe):
    started(calls)
    started(calls, OTHER)
    calls.health(KEY, 1, 3.0, 10.0, node_id=NODE)
    calls.health(OTHER, 1, 3.0, 10.5, node_id=NODE)
    assert calls.poll(13.0) == [] and calls.poll(14.0) == []  # both held for one probe of their host
    silent = calls.poll(16.0)  # the probe's deadline (3 s) passed: the host is silent
    assert [(o.key, type(o).__name__, o.call) for o in silent] == [(KEY, "Unreachable", "health"),
                                                                   (OTHER, "Unreachable", "health")]
    assert "its host (node abababababab) doesn't answer either" in silent[0].cause
    calls.health(KEY, 1, 3.0, 16.5, node_id=NODE)  # a re-check
    calls.health(OTHER, 1, 3.0, 16.5, node_id=NODE)
    assert calls.poll(19.5) == [] and len(probe.nodes) == 2  # the expired probe is not its answer: a new one
    (again, other) = calls.poll(22.5)  # the second probe is unanswered at its deadline too
    assert isinstance(again, Unreachable) and isinstance(other, Unreachable) and len(probe.nodes) == 2
    probe.method.calls[0].fut.set_result(1)  # the first probe answers late: ignored (it was judged)
    assert calls.poll(23.0) == []


def test_a_probe_that_never_resolves_expires_and_the_next_timeout_is_judged_by_a_new_probe(calls, probe):
    started(calls)
    calls.health(KEY, 1, 3.0, 10.0, node_id=NODE)
    calls.poll(13.0)
    (silent,) = calls.poll(16.0)  # the probe never resolves: silent at its deadline
    assert isinstance(silent, Unreachable)
    calls.health(KEY, 1, 3.0, 30.0, node_id=NODE)  # much later the host answers again, the slot is hung
    assert calls.poll(33.0) == [] and len(probe.nodes) == 2  # judged by a probe of its own
    probe.method.last.set_result(4242)
    assert calls.poll(33.5) == [HealthTimeout(KEY, 1)]  # hung, not "silent" for ever


def test_a_timed_out_health_check_of_a_slot_whose_node_is_unknown_is_unreachable_not_hung(calls, probe):
    h = Handle()
    calls.attach(KEY, 1, h, start=False)  # adopted: nothing it answered said where it runs
    calls.health(KEY, 1, 3.0, 10.0)
    (obs,) = calls.poll(13.0)
    assert isinstance(obs, Unreachable) and obs.call == "health" and probe.nodes == []
    assert "where it runs is not known" in obs.cause


def test_a_probe_that_cant_run_on_its_node_means_the_host_is_silent(calls, probe):
    started(calls)
    calls.health(KEY, 1, 3.0, 10.0, node_id=NODE)
    calls.poll(13.0)
    probe.method.last.set_exception(RuntimeError("TaskUnschedulableError: the node died"))
    (obs,) = calls.poll(13.2)
    assert isinstance(obs, Unreachable)


def test_confirm_asks_the_gcs_and_reports_only_a_dead_actor(calls, monkeypatch):
    h = started(calls)
    h.watch.last.set_exception(unavailable())
    calls.poll(1.0)
    answers = {"state": ("ALIVE", "", False)}
    monkeypatch.setattr(handles, "gcs_actor_state", lambda actor_id: answers["state"])
    calls.confirm()
    assert [o for o in calls.poll(1.1) if isinstance(o, Died)] == []  # alive: unavailable is not dead
    answers["state"] = ("DEAD", "The actor died because its node has died.", True)
    calls.confirm()
    (died,) = [o for o in calls.poll(1.2) if isinstance(o, Died)]
    assert died.host_lost and died.cause == "its host was lost: The actor died because its node has died."
    calls.confirm()
    assert calls.poll(1.3) == []  # reported once


def test_an_answer_clears_the_suspicion_and_a_kill_forgets_everything(calls, monkeypatch):
    h = started(calls)
    monkeypatch.setattr(handles, "gcs_actor_state", lambda actor_id: ("DEAD", "gone", False))
    h.watch.last.set_exception(unavailable())
    calls.poll(1.0)
    calls.health(KEY, 1, 3.0, 1.1, node_id=NODE)
    h.health.last.set_result({"ok": True})
    calls.poll(1.2)
    calls.confirm()  # it answered: not asked about
    assert calls.poll(1.3) == []
    h.drain.remote()  # (a call of the test's own)
    calls.drain(KEY, 1)
    h.drain.last.set_exception(unavailable())
    calls.poll(2.0)
    calls.kill(KEY, 1)
    calls.confirm()
    assert calls.poll(10.0) == []
    assert len(h.drain.calls) == 2 and len(h.watch.calls) == 2  # nothing issued again after the kill


@pytest.fixture
def reaper(monkeypatch) -> Probe:
    r = Probe()
    monkeypatch.setattr(handles, "reap_worker", r)
    return r


def killed_unreachable(calls: SlotCalls) -> Handle:
    h = started(calls)
    h.watch.last.set_exception(unavailable())
    calls.poll(1.0)
    calls.kill(KEY, 1, confirm=True, node_id=NODE)
    return h


def test_a_kill_sent_while_unreachable_is_confirmed_only_by_its_hosts_side(calls, monkeypatch, reaper):
    killed_unreachable(calls)
    gcs = Gcs(monkeypatch)
    calls.confirm()  # the GCS says DEAD at once after ray.kill; the worker table still says it lives
    assert gcs.asked == [("12ab" * 8, "fleet:web:0:g1")] and calls.poll(2.0) == []
    gcs.fate = ("its node's raylet reported its worker process (pid 4242) exited", None)
    calls.confirm()
    assert calls.poll(2.5) == [Gone(KEY, 1, "its node's raylet reported its worker process (pid 4242) exited")]
    calls.confirm()
    assert calls.poll(3.0) == [] and reaper.nodes == []  # once; nothing left to reap


def test_a_kill_that_never_arrived_is_carried_out_by_a_reaper_on_its_host(calls, monkeypatch, reaper):
    killed_unreachable(calls)
    Gcs(monkeypatch)
    calls.confirm()  # its worker lives, pid 4242
    calls.poll(2.0)
    assert reaper.nodes == []  # its raylet gets a moment to report the kill first
    calls.poll(2.0 + REAP_AFTER_S)
    assert reaper.nodes == [NODE]
    calls.poll(3.0 + REAP_AFTER_S)
    assert reaper.nodes == [NODE]  # one in flight
    calls.poll(2.0 + REAP_AFTER_S + REAP_TIMEOUT_S)  # its host didn't run it in time: written off ...
    calls.poll(2.0 + 2 * REAP_AFTER_S + REAP_TIMEOUT_S)
    assert reaper.nodes == [NODE, NODE]  # ... and another goes
    reaper.method.calls[0].fut.set_result("killed")  # the written-off one's late answer is not read
    assert calls.poll(20.0) == []
    reaper.method.last.set_result("killed")
    (gone,) = calls.poll(20.5)
    assert gone == Gone(KEY, 1, "a task on its host killed its process (pid 4242): the kill had not reached it")


def test_a_reaper_that_cant_run_is_tried_again_and_a_restarted_supervisor_finds_the_actor_by_name(
        calls, monkeypatch, reaper):
    gcs = Gcs(monkeypatch)
    calls.await_death(KEY, 3, node_id=NODE)  # killed before this supervisor started
    calls.await_death(KEY, 3, node_id=NODE)
    calls.confirm()
    assert gcs.asked == [("", "fleet:web:0:g3")]
    calls.confirm()
    assert gcs.asked[-1] == ("found-by-name", "fleet:web:0:g3")  # its id is kept once found
    calls.poll(0.0)
    calls.poll(REAP_AFTER_S)
    reaper.method.last.set_exception(RuntimeError("TaskUnschedulableError"))
    assert calls.poll(REAP_AFTER_S + 1) == []
    calls.poll(2 * REAP_AFTER_S + 1)
    assert len(reaper.nodes) == 2
    reaper.method.last.set_result("gone")
    assert calls.poll(2 * REAP_AFTER_S + 2) == [Gone(KEY, 3, "a task on its host found its process (pid 4242) gone")]


class Accessor:
    """The GCS's tables as the global state accessor hands them out (serialized protos)."""

    def __init__(self, actors: list, workers: dict) -> None:
        self.actors, self.workers = actors, workers

    def get_actor_info(self, actor_id):
        found = [a for a in self.actors if a.actor_id == actor_id.binary()]
        return found[0].SerializeToString() if found else None

    def get_actor_table(self, job_id, state):
        return [a.SerializeToString() for a in self.actors]

    def get_worker_info(self, worker_id):
        w = self.workers.get(worker_id.binary())
        return w.SerializeToString() if w else None


def test_gcs_worker_fate_reads_the_actor_and_worker_tables(monkeypatch):
    worker, node = b"\7" * 28, bytes.fromhex(NODE)
    actor = gcs_pb2.ActorTableData(actor_id=b"\1" * 16, name="fleet:web:0:g1", ray_namespace="test",
                                   state=gcs_pb2.ActorTableData.DEAD, start_time=5)
    actor.address.worker_id, actor.address.node_id = worker, node
    older = gcs_pb2.ActorTableData(actor_id=b"\2" * 16, name="fleet:web:0:g1", ray_namespace="test", start_time=1)
    alive = gcs_pb2.WorkerTableData(is_alive=True, pid=4242)
    acc = Accessor([older, actor], {worker: alive})
    monkeypatch.setattr(handles.ray._private.state.state, "_connect_and_get_accessor", lambda: acc)
    fate = handles.gcs_worker_fate
    assert fate("", "fleet:web:0:g1", "test", set()) == ("01" * 16, "", 4242)  # found by name, the newest
    assert fate("01" * 16, "", "test", {NODE}) == ("01" * 16, "Ray marked node abababababab dead", None)
    acc.workers[worker] = gcs_pb2.WorkerTableData(is_alive=False, pid=4242, exit_detail="killed by\nray.kill")
    assert fate("01" * 16, "", "test", set()) == (
        "01" * 16, "its node's raylet reported its worker process (pid 4242) exited: killed by ray.kill", None)
    never = gcs_pb2.ActorTableData(actor_id=b"\3" * 16, state=gcs_pb2.ActorTableData.DEAD)
    acc.actors.append(never)
    assert fate("03" * 16, "", "test", set())[1] == "it never had a process (Ray had not placed it yet)"


def test_the_reaper_kills_a_ray_worker_under_the_pid_and_nothing_else():
    worker = subprocess.Popen(["bash", "-c", 'exec -a "ray::SlotActor.watch" sleep 60'])
    other = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10  # until bash has exec'd under the worker's title
        while psutil.Process(worker.pid).cmdline()[:1] != ["ray::SlotActor.watch"] and time.monotonic() < deadline:
            time.sleep(0.01)
        reap = handles.reap_worker._function
        assert reap(other.pid) == "gone" and other.poll() is None  # the pid is no Ray worker's: untouched
        assert reap(worker.pid) == "killed"
        worker.wait(timeout=5)  # (the reaper reaped it already: it was this process's child)
        assert reap(worker.pid) == "gone"
    finally:
        for p in (worker, other):
            p.kill()
            p.wait()
