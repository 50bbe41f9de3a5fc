"""The supervisor on a real Redis store: fail-fast start, running degraded, catching up."""

from __future__ import annotations

import json
import uuid

import pytest
import ray

from fleet_ray.actors.launch import start_supervisor
from fleet_ray.client.fleet import FleetClient
from fleet_ray.control.recovery import OUTAGE_STRIDE
from fleet_ray.errors import StoreError, StoreUnavailable
from fleet_ray.store import keys
from fleet_ray.store.redis import RedisStore

from .conftest import sigkill


def test_unreachable_redis_at_start_is_a_clear_error(cluster):
    with pytest.raises(StoreUnavailable, match=r"redis://127.0.0.1:1/0"):
        start_supervisor("redis://127.0.0.1:1/0", namespace=f"t-{uuid.uuid4().hex[:6]}")


def test_a_password_in_the_store_url_is_refused_before_any_actor_gets_it(cluster):
    ns = f"t-{uuid.uuid4().hex[:6]}"
    with pytest.raises(StoreError, match="FLEET_STORE_PASSWORD_FILE") as exc:
        start_supervisor("redis://user:hunter2@127.0.0.1:6379/0", namespace=ns)
    assert "hunter2" not in str(exc.value)
    with pytest.raises(ValueError):
        ray.get_actor("fleet:supervisor", namespace=ns)


def test_fleet_runs_degraded_while_redis_is_down_and_catches_up(cluster, private_redis):
    ns = f"t-{uuid.uuid4().hex[:8]}"
    fleet = FleetClient(start_supervisor(private_redis["url"], namespace=ns, tick_s=0.05), ns)
    try:
        fleet.apply({"pools": [{"name": "web", "automation": "builtin.echo", "slots": 2,
                                "health": {"period_s": 0.2}}]})
        st = fleet.wait_ready(60)
        assert not st.store_degraded
        private_redis["stop"]()
        victim = st.slot("web:0")
        sigkill(victim.pid)
        # healing goes on without the store; status says the store is degraded; a generation that
        # can't be written ahead comes from the supervisor's epoch range (never handed out again)
        outage = OUTAGE_STRIDE + 1  # epoch 1: the first supervisor on this store
        st = fleet.wait_until(lambda s: s.store_degraded and s.slot("web:0").generation == outage
                              and s.slot("web:0").state == "running", 60)
        assert "unreachable" in (st.store_error or "")
        assert [r.value["item"] for r in fleet.map("web", ["a", "b"], timeout_s=30)] == ["a", "b"]
        private_redis["start"]()  # a fresh, empty Redis: the supervisor must write its state again
        fleet.wait_until(lambda s: not s.store_degraded, 60)
        store = RedisStore(private_redis["url"], namespace=ns)
        ckpt = json.loads(store.get(keys.SUPERVISOR_CHECKPOINT))
        slots = {(r["pool"], r["index"]): r for r in ckpt["slots"]}
        assert slots[("web", 0)]["generation"] == outage and slots[("web", 1)]["generation"] == 1
        assert int(store.get(keys.generation("web", 0))) == outage and int(store.get(keys.SUPERVISOR_EPOCH)) == 1
        assert ckpt["spec"]["pools"][0]["name"] == "web"
        # and a supervisor restart now recovers from what was caught up
        pid = ray.get(fleet.supervisor.ping.remote())
        sigkill(pid)
        st = fleet.wait_until(lambda s: s.supervisor_pid != pid and s.pool("web") is not None
                              and s.pool("web").counts.get("running") == 2, 60)
        assert st.slot("web:0").generation == outage
    finally:
        fleet.down(timeout_s=5)
