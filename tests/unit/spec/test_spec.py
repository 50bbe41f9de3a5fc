"""Spec and config validation: every problem is named by pool and field, nothing partial."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from fleet_ray.automation import BatchAutomation, Context, PhaseTimeout, SlotIdentity
from fleet_ray.errors import AutomationNotFound, AutomationVersionMismatch, SpecError
from fleet_ray.spec.discovery import find
from fleet_ray.spec.models import validate_spec


def test_valid_spec_resolves_every_pool():
    spec, resolved = validate_spec({"pools": [
        {"name": "web", "automation": "builtin.echo", "slots": 2, "config": {"tag": "x"}},
        {"name": "watch", "automation": "builtin.chaos"},
    ]})
    assert [p.name for p in spec.pools] == ["web", "watch"]
    assert resolved["web"].batch and not resolved["watch"].batch
    assert resolved["web"].distribution == "fleet-ray" and resolved["web"].installed_version


def test_shape_errors_name_the_pool_and_field():
    with pytest.raises(SpecError) as err:
        validate_spec({"pools": [
            {"name": "web", "automation": "builtin.echo", "slots": -1, "health": {"period_s": 0}},
            {"name": "Bad Name", "automation": "builtin.echo"},
        ]})
    fields = err.value.fields
    assert "pools.web.slots" in fields and "pools.web.health.period_s" in fields
    assert "pools.Bad Name.name" in fields


def test_config_errors_name_the_pool_and_config_field_and_unknown_keys():
    with pytest.raises(SpecError) as err:
        validate_spec({"pools": [{"name": "web", "automation": "builtin.echo", "config": {"tag": 1, "x": 2}}]})
    assert set(err.value.fields) == {"pools.web.config.tag", "pools.web.config.x"}


def test_unknown_automation_and_bad_pin_are_reported_per_pool():
    with pytest.raises(SpecError) as err:
        validate_spec({"pools": [
            {"name": "a", "automation": "nope.missing"},
            {"name": "b", "automation": "builtin.echo", "version": ">=99"},
        ]})
    msgs = {e["loc"]: e["msg"] for e in err.value.errors}
    assert "no automation named 'nope.missing'" in msgs["pools.a.automation"]
    assert "builtin.echo" in msgs["pools.a.automation"]  # lists what is installed
    assert "pinned to fleet-ray>=99" in msgs["pools.b.automation"]
    with pytest.raises(SpecError, match="pools.c.version"):
        validate_spec({"pools": [{"name": "c", "automation": "builtin.echo", "version": "not a version"}]})


def test_duplicate_pool_names_and_unknown_fields_are_rejected():
    with pytest.raises(SpecError, match="appears twice"):
        validate_spec({"pools": [{"name": "a", "automation": "builtin.echo"}] * 2})
    with pytest.raises(SpecError, match="pools.a.slotz"):
        validate_spec({"pools": [{"name": "a", "automation": "builtin.echo", "slotz": 3}]})


def test_version_pin_accepts_bare_versions_and_specifiers():
    spec, _ = validate_spec({"pools": [{"name": "a", "automation": "builtin.echo", "version": "0.1.0"}]})
    assert spec.pools[0].version == "==0.1.0"
    with pytest.raises(AutomationVersionMismatch) as err:
        find("builtin.echo", "==0.0.1")
    assert err.value.installed == "0.1.0" and err.value.pinned == "==0.0.1"
    with pytest.raises(AutomationNotFound):
        find("missing.one")


def test_slot_refuses_to_start_when_the_installed_version_does_not_match():
    from fleet_ray.actors.slot import SlotCore

    pool = {"name": "a", "automation": "builtin.echo", "version": "==9.9.9"}
    slot = SlotCore(pool, 0, 1, None, "ns")
    with pytest.raises(AutomationVersionMismatch, match="pinned to fleet-ray==9.9.9 but fleet-ray 0.1.0"):
        asyncio.run(slot.start())


def test_context_phase_timeout_names_the_phase_and_slot():
    class Cfg(BaseModel):
        pass

    ctx = Context(SlotIdentity("web", 3, 2), Cfg())

    async def go():
        async with ctx.phase("login", timeout=0.01):
            assert ctx.phase_name == "login"
            ctx.step("typing password")
            assert ctx.phase_step == "typing password"
            await asyncio.sleep(5)

    with pytest.raises(PhaseTimeout, match="phase 'login' in slot web:3 timed out after 0.01s") as err:
        asyncio.run(go())
    assert err.value.phase == "login" and ctx.phase_name is None


def test_concurrent_items_each_keep_their_own_phase_and_step():
    class Cfg(BaseModel):
        pass

    ctx = Context(SlotIdentity("web", 0, 1), Cfg())
    seen = {}

    async def item(name: str, phase: str, step: str, entered: asyncio.Event, go: asyncio.Event, fail: bool):
        async with ctx.phase(phase):
            ctx.step(step)
            entered.set()
            await go.wait()
            seen[name] = (ctx.phase_name, ctx.phase_step)
            if fail:
                raise RuntimeError(name)

    async def main():
        a_in, b_in, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(item("a", "login", "typing password", a_in, go, True))
        await a_in.wait()
        b = asyncio.create_task(item("b", "search", "goto results", b_in, go, False))
        await b_in.wait()
        # a health check asks from outside any item: the phase entered last of those open
        outside = (ctx.phase_name, ctx.phase_step)
        go.set()
        err = (await asyncio.gather(a, b, return_exceptions=True))[0]
        return outside, err

    outside, err = asyncio.run(main())
    assert outside == ("search", "goto results")
    assert seen == {"a": ("login", "typing password"), "b": ("search", "goto results")}
    # a failure names its own item's phase and step, not the one another item set meanwhile
    assert (err.fleet_phase, err.fleet_step) == ("login", "typing password")
    assert (ctx.phase_name, ctx.phase_step) == (None, None)


def test_context_hooks_reach_the_slot():
    seen = {}

    class Cfg(BaseModel):
        pass

    ctx = Context(SlotIdentity("web", 0, 1), Cfg(), on_recycle=lambda r: seen.setdefault("recycle", r),
                  on_progress=lambda p: seen.setdefault("progress", p))
    ctx.request_recycle("memory creeping up")
    ctx.report_progress("halfway", done=5, total=10)
    assert seen["recycle"] == "memory creeping up" and ctx.recycle_reason == "memory creeping up"
    assert seen["progress"]["done"] == 5 and seen["progress"]["message"] == "halfway"

    async def sleeper():
        ctx.stop()
        return await ctx.sleep(10)

    assert asyncio.run(sleeper()) is False


def test_batch_automation_declares_its_config_model():
    class A(BatchAutomation):
        class Config(BaseModel):
            n: int = 1

    assert A.config_model().model_validate({"n": 2}).n == 2
