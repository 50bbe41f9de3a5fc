"""What status and events show of an error: the first line, redacted (issue: full exception text with
Pydantic's input echo reached a slot's reason and the slot.unhealthy message). No Ray."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from fleet_ray.control.lifecycle import (
    ERROR_LINE,
    ConfigResult,
    Died,
    HealthReport,
    Ready,
    SlotRecord,
    SlotState,
    SlotTable,
    StartFailed,
    error_line,
    observe,
)
from fleet_ray.ray_boundary import short_cause
from fleet_ray.spec.models import PoolSpec

SECRET = "Zq9-proxy-pw-31337"


class ProxyConfig(BaseModel):
    proxy: list[str]  # a dict is refused: Pydantic echoes it, password and all
    retries: int


def pydantic_text() -> str:
    """A real ValidationError as an automation's slot reports it (type: message, up to 2,000 chars)."""
    with pytest.raises(ValidationError) as info:
        ProxyConfig.model_validate({"proxy": {"url": f"http://bob:{SECRET}@10.0.0.9:3128", "password": SECRET},
                                    "retries": "many"})
    text = f"ValidationError: {info.value}"
    assert SECRET in text and "input_value" in text  # what used to reach status
    return ("\n" * 2 + text + "\n" + "x" * 3000)[:2000]


def running(p: PoolSpec) -> tuple[SlotTable, SlotRecord]:
    t = SlotTable()
    rec = SlotRecord(p.name, 0, generation=1, state=SlotState.STARTING, created_at=0.0)
    t.add(rec)
    observe(t, Ready(rec.key, 1, pid=10, node_id="n1"), 0.0, p)
    return t, rec


def assert_one_clean_line(text: str) -> None:
    assert SECRET not in text and "input_value" not in text and "\n" not in text, text
    assert len(text) <= ERROR_LINE + 20


def test_error_line_is_the_first_line_redacted():
    line = error_line(pydantic_text())
    assert_one_clean_line(line)
    assert line.startswith("ValidationError: 1 validation error") or line.startswith("ValidationError: 2 validation")
    assert error_line(f"ValueError: cannot reach http://u:{SECRET}@h:1/x") == "ValueError: cannot reach http://***@h:1/x"
    assert error_line(None) == "" and error_line("") == ""
    assert len(error_line("y" * 5000)) == ERROR_LINE


def test_unhealthy_reason_and_event_carry_only_the_first_line():
    p = PoolSpec(name="web", automation="builtin.echo", slots=1, health={"failure_threshold": 1})
    t, rec = running(p)
    events = observe(t, HealthReport(rec.key, 1, ok=False, error=pydantic_text()), 1.0, p)
    assert [e.kind for e in events] == ["slot.unhealthy"]
    assert_one_clean_line(events[0].message)
    assert rec.reason.startswith("unhealthy: ValidationError")
    assert_one_clean_line(rec.reason)


@pytest.mark.parametrize("obs_of,kind,prefix", [
    (lambda key: StartFailed(key, 1, pydantic_text()), "slot.start_failed", "start failed: "),
    (lambda key: Died(key, 1, pydantic_text()), "slot.died", "died: "),
])
def test_start_failures_and_deaths_carry_only_the_first_line(obs_of, kind, prefix):
    p = PoolSpec(name="web", automation="builtin.echo", slots=1)
    t = SlotTable()
    rec = SlotRecord("web", 0, generation=1, state=SlotState.STARTING, created_at=0.0)
    t.add(rec)
    if kind == "slot.died":
        observe(t, Ready(rec.key, 1, pid=10, node_id="n1"), 0.0, p)
    events = observe(t, obs_of(rec.key), 1.0, p)
    assert [e.kind for e in events] == [kind]
    assert_one_clean_line(events[0].message)
    assert rec.reason.startswith(prefix)
    assert_one_clean_line(rec.reason)


def test_a_rejected_config_carries_only_the_first_line():
    p = PoolSpec(name="web", automation="builtin.echo", slots=1)
    t, rec = running(p)
    events = observe(t, ConfigResult(rec.key, 1, applied=False, config_hash="h", error=pydantic_text()), 1.0, p)
    assert [e.kind for e in events] == ["config.rejected"]
    assert_one_clean_line(events[0].message)
    assert_one_clean_line(rec.recycle_requested or "")


def test_short_cause_of_a_remote_error_is_one_redacted_line():
    class FakeTaskError(Exception):
        pass

    exc = FakeTaskError("wrapper")
    exc.cause = ValueError(f"proxy http://bob:{SECRET}@10.0.0.9:3128 refused\n  input_value={{'password': '{SECRET}'}}")
    assert short_cause(exc) == "ValueError: proxy http://***@10.0.0.9:3128 refused"
    assert short_cause(RuntimeError(f"\n\nhttp://a:{SECRET}@h/ down\nmore")) == "RuntimeError: http://***@h/ down"
    assert short_cause(RuntimeError("")) == "RuntimeError"


def test_a_failed_slot_start_crosses_the_ray_boundary_redacted():
    import asyncio

    from fleet_ray.actors.slot import start_redacted
    from fleet_ray.errors import AutomationError

    async def setup_fails():
        raise RuntimeError(f"upstream http://alice:{SECRET}@10.0.0.9:3128/ refused\n  details")

    with pytest.raises(AutomationError) as info:
        asyncio.run(start_redacted(setup_fails, "fleet:web:0:g1"))
    assert SECRET not in str(info.value) and "RuntimeError: upstream http://***@10.0.0.9:3128/ refused" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained raw traceback
