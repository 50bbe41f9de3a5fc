"""State the supervisor must never lose or undo (issue 15, items 1-3 and 5-7), driven without Ray."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import sqlite3

import pytest
from fastapi.testclient import TestClient

from fleet_ray.actors.supervisor import Supervisor
from fleet_ray.actors.supervisor_recovery import RECOVERY_RETRY_S
from fleet_ray.cli import main as cli
from fleet_ray.client.http import ApiClient
from fleet_ray.control.recovery import OUTAGE_STRIDE
from fleet_ray.errors import SpecError, SupervisorRecovering
from fleet_ray.observe.crashes import merge_crash, record_crash
from fleet_ray.serve.app import create_app
from fleet_ray.serve.auth import ApiConfig, token_digest
from fleet_ray.spec.models import PoolSpec
from fleet_ray.store import keys
from fleet_ray.store.sqlite import SQLiteStore
from fleet_ray.testing import FlakyStore, MemoryStore

from .conftest import Rig, _inline, echo

PASSWORD = "hunter2-Zq9xLr2"


def running(status, pool: str = "web") -> list[tuple[str, int]]:
    return [(s.id, s.generation) for s in status.pool(pool).slots if s.state == "running"]


# -- 1. no change before recovery -------------------------------------------------------------------
def test_a_change_before_recovery_is_refused_and_recovery_keeps_the_checkpointed_spec(rig, store):
    first = rig()
    first.apply({"pools": [echo("web", 2)]})
    first.run(3)
    store.down = True  # the supervisor restarts while the store is down
    second = rig(calls=type(first.calls)(live=dict(first.calls.live)))
    second.run(1)
    with pytest.raises(SupervisorRecovering) as refused:
        asyncio.run(second.core.specs.apply({"pools": [echo("new", 1)]}, _inline))
    assert refused.value.retry_after_s >= 1 and "try again" in str(refused.value)
    again = pickle.loads(pickle.dumps(refused.value))  # crosses Ray as itself
    assert isinstance(again, SupervisorRecovering) and again.retry_after_s == refused.value.retry_after_s
    for change in (lambda: second.core.specs.update_pool("web", slots=5), lambda: second.core.specs.drain("web"),
                   lambda: second.core.specs.recycle("web:0"), lambda: second.core.specs.workqueue("web")):
        with pytest.raises(SupervisorRecovering):
            change()
    assert not second.status().recovered

    store.down = False
    second.run(2)
    st = second.status()
    assert st.recovered and [p.name for p in st.pools] == ["web"]  # nothing was undone: nothing was accepted
    assert running(st) == [("web:0", 1), ("web:1", 1)]
    assert second.apply({"pools": [echo("new", 1)]}).added == ["new"]  # now it goes through


def test_the_actor_waits_briefly_for_recovery_before_refusing(rig):
    sup = rig()

    async def later() -> None:
        await asyncio.sleep(0.05)
        sup.core.step()

    async def both() -> None:
        await asyncio.gather(sup.core.until_recovered(timeout_s=5), later())

    asyncio.run(both())
    assert sup.core.state.recovered


# -- 2. store failures: nothing dropped, degraded shown ---------------------------------------------
class ExplodingStore(FlakyStore):
    """A store whose writes raise something that is not a StoreError (a backend bug, say)."""

    explode = False

    def __getattr__(self, name):
        call = super().__getattr__(name)
        if self.explode and name in ("put", "put_many", "log_append", "raise_to"):
            def boom(*args, **kwargs):
                raise RuntimeError("not a store error")
            return boom
        return call


def test_a_write_that_raises_keeps_the_dirty_marks_and_the_event_batch(rig, clock):
    store = ExplodingStore()
    sup = Rig(store, clock)
    sup.apply({"pools": [echo("web", 1)]})
    sup.run(2)
    store.explode = True
    sup.core.specs.update_pool("web", slots=2)  # dirty, and a pool.applied event to write
    unsaved = sup.core.journal.unsaved
    assert unsaved > 0 and sup.core.state.dirty
    with pytest.raises(RuntimeError):
        sup.core.checkpointer.persist_once()
    assert sup.core.state.dirty  # the checkpoint is still to be written
    assert sup.core.journal.unsaved >= unsaved  # and the events are still queued, in order
    store.explode = False
    sup.core.checkpointer.persist_once()
    saved = json.loads(store.get(keys.SUPERVISOR_CHECKPOINT))
    assert saved["spec"]["pools"][0]["slots"] == 2 and sup.core.journal.unsaved == 0
    logged = [json.loads(e.data)["kind"] for e in store.inner.log_range(keys.EVENT_LOG)]
    assert logged.count("pool.applied") == 2


def test_a_locked_sqlite_store_degrades_the_fleet_and_loses_nothing(rig, clock, tmp_path):
    inner = SQLiteStore(tmp_path / "store.db", "test")
    inner._conn().execute("PRAGMA busy_timeout=20")  # this thread's connection: don't wait 30 s here
    sup = Rig(FlakyStore(inner), clock)
    sup.apply({"pools": [echo("web", 1)]})
    sup.run(2)
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: "database is locked"
    sup.core.specs.update_pool("web", slots=2)
    sup.run(2)
    st = sup.status()
    assert st.store_degraded and "locked" in (st.store_error or "")
    assert sup.core.state.dirty and sup.core.journal.unsaved > 0
    other.execute("ROLLBACK")
    other.close()
    sup.run(3)
    st = sup.status()
    assert not st.store_degraded and sup.core.journal.unsaved == 0
    assert json.loads(inner.get(keys.SUPERVISOR_CHECKPOINT))["spec"]["pools"][0]["slots"] == 2
    assert [json.loads(e.data)["kind"] for e in inner.log_range(keys.EVENT_LOG)].count("pool.applied") == 2


def test_status_says_degraded_while_the_store_is_down_even_when_nothing_is_written(rig, store):
    sup = rig()
    sup.run(2)  # an empty fleet: nothing to write, ever
    store.down = True
    sup.run(5)
    assert sup.status().store_degraded
    store.down = False
    sup.run(2)
    assert not sup.status().store_degraded


# -- 3. a checkpoint this version rejects -----------------------------------------------------------
def _checkpoint(**fields) -> bytes:
    body = {"spec": {"name": "test", "pools": [echo("web", 1)]}, "batch": {}, "slots": [], "rollouts": {}}
    body.update(fields)
    return json.dumps(body).encode()


def test_a_pool_this_version_rejects_is_left_out_and_the_rest_recovers_without_logging_secrets(
        rig, store, caplog):
    caplog.set_level(logging.DEBUG)
    bad = {**echo("old", 1), "config": {"proxy": f"http://bob:{PASSWORD}@10.0.0.5:3128"},
           "browser": {"proxies": [{"url": "http://10.0.0.5:3128", "username": "bob", "password": PASSWORD}]},
           "retired_option": True}
    twice = {**echo("web", 3), "config": {"password": PASSWORD}}
    store.put(keys.SUPERVISOR_CHECKPOINT, _checkpoint(spec={"name": "test", "pools": [echo("web", 1), bad, twice]},
                                                      slots=[{"pool": "old", "index": 0, "generation": 7}]))
    sup = rig()
    sup.run(2)
    st = sup.status()
    assert st.recovered and [p.name for p in st.pools] == ["web"] and running(st) == [("web:0", 1)]
    assert "spec.pools.old.retired_option" in (st.recovery or "") and "appears twice" in st.recovery
    assert PASSWORD not in caplog.text and "input_value" not in caplog.text
    assert PASSWORD not in st.model_dump_json()
    # the rejected pool is kept as written (a version that knows it gets it back), its generation too
    sup.core.state.dirty = True
    sup.core.checkpointer.persist_once()
    saved = json.loads(store.get(keys.SUPERVISOR_CHECKPOINT))
    assert [p["name"] for p in saved["spec"]["pools"]] == ["web", "old"]
    assert ["old", 0, 7] in saved["retired_generations"]


def test_an_unreadable_checkpoint_is_reported_in_status_and_not_retried_every_tick(rig, store, clock, caplog):
    caplog.set_level(logging.DEBUG)
    store.put(keys.SUPERVISOR_CHECKPOINT, _checkpoint(slots={"password": PASSWORD}))
    reads = []
    get = store.inner.get
    store.inner.get = lambda k: reads.append(k) or get(k)
    sup = rig()
    sup.run(10, every=0.1)  # 100 ticks
    st = sup.status()
    assert not st.recovered and st.recovery.startswith("recovery failed: slots")
    assert reads.count(keys.SUPERVISOR_CHECKPOINT) == 1
    assert PASSWORD not in caplog.text and "input_value" not in caplog.text
    assert caplog.text.count("recovery failed") == 1
    with pytest.raises(SupervisorRecovering) as refused:
        sup.core.specs.update_pool("web", slots=2)
    assert "recovery failed: slots" in str(refused.value) and refused.value.retry_after_s > 1
    store.put(keys.SUPERVISOR_CHECKPOINT, _checkpoint())  # repaired
    sup.run(RECOVERY_RETRY_S + 1, every=1.0)
    assert sup.status().recovered and running(sup.status()) == [("web:0", 1)]


# -- 5. one broken pool doesn't block the others ----------------------------------------------------
def test_scaling_pausing_and_draining_a_pool_do_not_depend_on_the_other_pools_resolving(rig):
    sup = rig()
    sup.apply({"pools": [echo("web", 1), echo("other", 1)]})
    sup.run(2)
    st = sup.core.state  # the other pool's automation is no longer installed (e.g. after an upgrade)
    gone = PoolSpec.model_validate({"name": "other", "automation": "gone.missing", "slots": 1})
    st.set_desired(st.spec.model_copy(update={"pools": [gone if p.name == "other" else p for p in st.spec.pools]}))
    assert sup.core.specs.update_pool("web", slots=3).changed == ["web"]
    assert sup.core.specs.update_pool("web", paused=True).changed == ["web"]
    sup.core.specs.drain("web")
    sup.run(1)
    assert sup.core.state.desired["web"].slots == 0 and sup.core.state.desired["other"].automation == "gone.missing"
    with pytest.raises(SpecError) as bad:
        sup.core.specs.update_pool("web", slots=-1)  # the pool itself is still validated
    assert bad.value.fields == ["pools.web.slots"]


# -- 6. crash ids per fleet run ---------------------------------------------------------------------
def test_crash_ids_differ_between_fleet_runs_so_a_new_fleet_crash_is_recorded():
    store = MemoryStore()
    old = merge_crash("web", 0, 1, None, True, "killed", run="run-a", now=1.0)
    new = merge_crash("web", 0, 1, None, True, "killed", run="run-b", now=2.0)
    assert old.id != new.id
    assert record_crash(store, old) and record_crash(store, new)  # both reported
    assert not record_crash(store, new)  # the same generation of the same run: once


def test_a_fleet_run_id_survives_supervisor_restarts_and_a_new_fleet_gets_a_new_one(rig, store):
    first = rig()
    first.apply({"pools": [echo("web", 1)]})
    first.run(2)
    run = first.core.state.run_id
    assert run
    restarted = rig(calls=type(first.calls)(live=dict(first.calls.live)))
    restarted.run(2)
    assert restarted.core.state.run_id == run
    store.delete(keys.SUPERVISOR_CHECKPOINT, *store.keys("gen:"))  # what `down` leaves: no checkpoint
    up = rig()
    up.run(1)
    assert up.core.state.run_id and up.core.state.run_id != run


# -- 7. a generation is never handed out twice -------------------------------------------------------
def test_a_generation_handed_out_while_the_store_is_down_is_never_handed_out_again(rig, store):
    first = rig()
    first.apply({"pools": [echo("web", 1)]})
    first.run(2)
    store.down = True
    first.calls.die(("web", 0))
    first.run(3)  # healing goes on: the replacement's generation comes from this supervisor's epoch
    assert first.status().slot("web:0").state == "running"
    first.calls.die(("web", 0))  # ... and dies too, while the store is still down
    first.run(3)
    # the supervisor dies before the store is back (nothing of the outage was written); the slot too
    store.down = False
    second = rig(calls=type(first.calls)(live={}))
    second.run(3)
    assert second.status().slot("web:0").state == "running"
    created = first.calls.created + second.calls.created
    assert [g for _, g in first.calls.created] == [1, OUTAGE_STRIDE + 1, OUTAGE_STRIDE + 2]
    assert len(set(created)) == len(created)  # no generation twice (same actor name, lessee, crash id)
    # a second outage of the new supervisor uses its own, higher range
    store.down = True
    second.calls.die(("web", 0))
    second.run(3)
    assert second.calls.created[-1][1] > OUTAGE_STRIDE * 2
    created = first.calls.created + second.calls.created
    assert len(set(created)) == len(created)


def test_a_store_that_lost_everything_gets_the_epoch_back_with_the_generations(rig, store):
    sup = rig()
    sup.apply({"pools": [echo("web", 1)]})
    sup.run(2)
    epoch = sup.core.state.epoch
    assert epoch >= 1 and int(store.get(keys.SUPERVISOR_EPOCH)) == epoch
    store.down = True
    sup.calls.die(("web", 0))
    sup.run(2)
    store.inner = MemoryStore()  # a fresh, empty Redis comes back
    store.down = False
    sup.run(2)
    assert int(store.get(keys.SUPERVISOR_EPOCH)) == epoch  # the next recovery moves past this range
    assert int(store.get(keys.generation("web", 0))) == OUTAGE_STRIDE * epoch + 1


def test_ray_never_retries_a_change_onto_a_restarted_supervisor():
    cls = Supervisor.__ray_metadata__.modified_class
    changes = ["apply", "scale", "set_paused", "drain", "resume", "recycle", "pause_rollout", "resume_rollout",
               "rollback"]
    assert {name: getattr(getattr(cls, name), "__ray_max_task_retries__", None) for name in changes} == dict.fromkeys(
        changes, 0)
    assert getattr(cls.status, "__ray_max_task_retries__", None) is None  # questions keep Ray's retries


def test_the_api_client_and_cli_say_recovering_and_when_to_retry(monkeypatch, capsys):
    class Recovering:
        async def scale(self, pool: str, slots: int) -> None:
            raise SupervisorRecovering("its checkpoint is not read yet", 2.5)

        async def apply(self, spec):
            raise SupervisorRecovering("recovery failed: slots: Input should be a valid list", 30.0)

    base = "http://127.0.0.1:8470"
    http = TestClient(create_app(ApiConfig(token_sha256=token_digest("t"), allowed_hosts=["127.0.0.1:8470"]),
                                 Recovering()), base_url=base, headers={"Authorization": "Bearer t"})
    r = http.post("/api/v1/pools/web/scale", json={"slots": 2})
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["code"] == "recovering" and "try again" in r.json()["error"]["message"]
    api = ApiClient(base, token="t")
    api._http = http
    with pytest.raises(SupervisorRecovering) as err:
        api.apply({"pools": []})
    assert err.value.retry_after_s == 30.0 and "recovery failed: slots" in str(err.value)

    def refused(args) -> int:
        raise SupervisorRecovering("its checkpoint is not read yet", 1.0)

    monkeypatch.setattr(cli, "cmd_status", refused)
    assert cli.main(["status"]) == 75
    assert "the supervisor is recovering, try again" in capsys.readouterr().err
