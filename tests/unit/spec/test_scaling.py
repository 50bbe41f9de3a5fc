"""Autoscaled pools in the spec: autoscale and concurrency_bounds, each problem named by pool and field."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from fleet_ray.errors import SpecError
from fleet_ray.spec.discovery import ResolvedPool
from fleet_ray.spec.models import PoolSpec, validate_spec
from fleet_ray.spec.scaling import AutoscalePolicy, ScaleSignal, scale_signal

SOURCE = {"name": "src", "automation": "builtin.numbers"}  # a continuous producer of stream src.numbers


def batch(**kw) -> dict:
    return {"name": "sweep", "automation": "builtin.echo", **kw}


def consumer(**kw) -> dict:  # a continuous pool that consumes src.numbers
    return {"name": "relay", "automation": "builtin.relay", "inputs": {"numbers": "src.numbers"}, **kw}


def errors_of(*pools: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        validate_spec({"pools": list(pools)})
    return {e["loc"]: e["msg"] for e in err.value.errors}


def test_an_operators_yaml_with_autoscaled_pools_validates():
    spec, resolved = validate_spec(yaml.safe_load("""
        pools:
          - name: sweep
            automation: builtin.echo
            autoscale: {min_slots: 0, max_slots: 20, target_backlog_per_slot: 8, cooldown_s: 60}
            concurrency_bounds: {min: 2, max: 16}
          - {name: src, automation: builtin.numbers}
          - name: relay
            automation: builtin.relay
            inputs: {numbers: src.numbers}
            slots: 2
            autoscale: {min_slots: 1, max_slots: 6, signal: lag, stream: numbers}
    """))
    sweep, relay = spec.pool("sweep"), spec.pool("relay")
    assert sweep.slots == 0 and sweep.concurrency == 2  # starting size min_slots, starting concurrency min
    assert scale_signal(sweep, resolved["sweep"].batch) == ScaleSignal("backlog")
    assert relay.slots == 2  # the given starting size
    assert relay.autoscale.stream == "src.numbers"  # the input name became the stream it reads
    assert scale_signal(relay, resolved["relay"].batch) == ScaleSignal("lag", "src.numbers")
    again, _ = validate_spec(spec.model_dump(mode="json"))  # a checkpoint reads back the same spec
    assert again == spec


def test_min_and_max_slots_are_checked_and_named():
    assert errors_of(batch(autoscale={"min_slots": 6, "max_slots": 5})) == {
        "pools.sweep.autoscale.max_slots": "max_slots (5) is below min_slots (6)"}
    errs = errors_of(batch(autoscale={"min_slots": -1, "max_slots": 0}))
    assert set(errs) == {"pools.sweep.autoscale.min_slots", "pools.sweep.autoscale.max_slots"}
    assert errors_of(batch(autoscale={"min_slots": 1}))["pools.sweep.autoscale.max_slots"] == "Field required"


def test_slots_with_autoscale_is_the_starting_size_and_must_lie_within_min_and_max():
    msg = errors_of(batch(slots=9, autoscale={"min_slots": 1, "max_slots": 5}))["pools.sweep.slots"]
    assert "starting size" in msg and "1..5" in msg
    spec, _ = validate_spec({"pools": [batch(slots=3, autoscale={"min_slots": 1, "max_slots": 5})]})
    assert spec.pools[0].slots == 3
    spec, _ = validate_spec({"pools": [batch(autoscale={"min_slots": 2, "max_slots": 5})]})
    assert spec.pools[0].slots == 2


def test_a_drained_pool_may_sit_below_min_slots_while_paused():
    drained = batch(slots=0, paused=True, autoscale={"min_slots": 2, "max_slots": 5})
    spec, _ = validate_spec({"pools": [drained]})  # what fleet-ray drain writes
    assert spec.pools[0].slots == 0
    assert "pools.sweep.slots" in errors_of({**drained, "paused": False})  # resumed, it must be within


def test_a_pool_built_in_code_is_normalised_and_checked_the_same_way():
    pool = PoolSpec(name="web", automation="builtin.echo", autoscale=AutoscalePolicy(min_slots=2, max_slots=5))
    assert pool.slots == 2
    with pytest.raises(ValidationError) as err:
        AutoscalePolicy(min_slots=3, max_slots=2)
    assert [e["loc"] for e in err.value.errors()] == [("max_slots",)]


def test_the_signal_must_fit_the_automations_kind():
    msg = errors_of(batch(autoscale={"max_slots": 3, "signal": "lag"}))["pools.sweep.autoscale.signal"]
    assert "no inputs" in msg  # lag needs a stream the pool consumes
    msg = errors_of(SOURCE, consumer(autoscale={"max_slots": 3, "signal": "backlog"}))["pools.relay.autoscale.signal"]
    assert "no work queue" in msg and "lag" in msg
    msg = errors_of({**SOURCE, "autoscale": {"max_slots": 3}})["pools.src.autoscale.signal"]
    assert "consumes no stream" in msg and "fixed 'slots'" in msg


def test_a_continuous_pool_with_one_input_scales_on_its_lag_by_default():
    spec, resolved = validate_spec({"pools": [SOURCE, consumer(autoscale={"max_slots": 4})]})
    relay = spec.pool("relay")
    assert relay.autoscale.signal is None  # left as written (the kind is the automation's, not the spec's)
    assert scale_signal(relay, resolved["relay"].batch) == ScaleSignal("lag", "src.numbers")


def test_the_lag_stream_must_be_one_the_pool_consumes():
    msg = errors_of(SOURCE, consumer(autoscale={"max_slots": 3, "stream": "prices"}))["pools.relay.autoscale.stream"]
    assert "'prices' is not one of this pool's inputs (numbers: src.numbers)" == msg
    spec, _ = validate_spec({"pools": [SOURCE, consumer(autoscale={"max_slots": 3, "stream": "src.numbers"})]})
    assert spec.pool("relay").autoscale.signal == "lag"  # a stream alone means lag
    msg = errors_of(SOURCE, consumer(autoscale={"max_slots": 3, "signal": "backlog", "stream": "numbers"}))
    assert "only by signal 'lag'" in msg["pools.relay.autoscale.stream"]


def test_one_policy_object_serves_pools_with_different_inputs():
    shared = AutoscalePolicy(max_slots=3, stream="numbers")
    a = PoolSpec(name="a", automation="builtin.relay", inputs={"numbers": "x.numbers"}, autoscale=shared)
    b = PoolSpec(name="b", automation="builtin.relay", inputs={"numbers": "y.numbers"}, autoscale=shared)
    assert (a.autoscale.stream, b.autoscale.stream, shared.stream) == ("x.numbers", "y.numbers", "numbers")


def test_a_pool_with_several_inputs_names_the_one_to_scale_on():
    two = {"name": "join", "automation": "builtin.relay", "inputs": {"a": "x.out", "b": "y.out"}}
    with pytest.raises(ValidationError) as err:
        PoolSpec.model_validate({**two, "autoscale": {"max_slots": 3, "signal": "lag"}})
    (e,) = err.value.errors()
    assert e["loc"] == ("autoscale", "stream") and "one of ['a', 'b']" in e["msg"]
    pool = PoolSpec.model_validate({**two, "autoscale": {"max_slots": 3}})
    with pytest.raises(ValueError, match=r"autoscale.stream.*one of \['a', 'b'\]"):
        scale_signal(pool, batch=False)


def test_scale_to_zero_settings_need_min_slots_zero():
    msg = errors_of(batch(autoscale={"max_slots": 3, "downscale_to_zero_delay_s": 60}))
    assert msg == {"pools.sweep.autoscale.downscale_to_zero_delay_s": "scaling to zero needs min_slots: 0 "
                                                                       "(min_slots is 1)"}


def test_policy_fields_reject_nonsense_values():
    errs = errors_of(batch(autoscale={"max_slots": 3, "upscale_delay_s": -1, "cooldown_s": -5, "tolerance": 1,
                                      "max_step_up": 0, "target_backlog_per_slot": 0, "smoothing_s": -1}))
    assert {f"pools.sweep.autoscale.{f}" for f in (
        "upscale_delay_s", "cooldown_s", "tolerance", "max_step_up", "target_backlog_per_slot", "smoothing_s",
    )} == set(errs)


def test_concurrency_bounds_are_checked_and_concurrency_is_their_starting_value():
    assert errors_of(batch(concurrency_bounds={"min": 9, "max": 8})) == {
        "pools.sweep.concurrency_bounds.max": "max (8) is below min (9)"}
    msg = errors_of(batch(concurrency=20, concurrency_bounds={"min": 2, "max": 8}))["pools.sweep.concurrency"]
    assert "starting value" in msg and "2..8" in msg
    spec, _ = validate_spec({"pools": [batch(concurrency=4, concurrency_bounds={"min": 2, "max": 8})]})
    assert spec.pools[0].concurrency == 4
    errs = errors_of(batch(concurrency_bounds={"max": 8, "max_memory_ratio": 1.5, "max_event_loop_lag_s": 0}))
    assert set(errs) == {"pools.sweep.concurrency_bounds.max_memory_ratio",
                         "pools.sweep.concurrency_bounds.max_event_loop_lag_s"}


def test_every_pools_problems_are_reported_at_once():
    errs = errors_of(batch(autoscale={"min_slots": 4, "max_slots": 2}),
                     {**batch(name="other"), "slots": 7, "autoscale": {"max_slots": 3}})
    assert set(errs) == {"pools.sweep.autoscale.max_slots", "pools.other.slots"}


def test_tuning_autoscale_needs_no_new_slots():
    fixed = PoolSpec(name="web", automation="builtin.echo", slots=2)
    scaled = PoolSpec(name="web", automation="builtin.echo", slots=2,
                      autoscale=AutoscalePolicy(min_slots=1, max_slots=9, cooldown_s=5))
    assert fixed.slot_shape_hash() == scaled.slot_shape_hash()


def test_a_packaged_pool_seen_from_the_driver_is_checked_where_its_kind_is_known():
    pools = [{"name": "pkg", "automation": "acme.sweep", "package": "acme==1.0",
              "autoscale": {"max_slots": 3, "signal": "backlog"}}]

    def placeholder(pool):  # what the client resolves for a packaged pool: its kind is not known here
        return ResolvedPool(spec=pool, batch=False, distribution=None, installed_version=None)

    def supervisor_side(pool):  # resolved inside the package's runtime env: a continuous automation
        return ResolvedPool(spec=pool, batch=False, distribution="acme", installed_version="1.0")

    validate_spec({"pools": pools}, resolve=placeholder)
    with pytest.raises(SpecError, match="pools.pkg.autoscale.signal"):
        validate_spec({"pools": pools}, resolve=supervisor_side)


def test_concurrency_bounds_are_for_batch_pools():
    src = {"name": "src", "automation": "builtin.numbers"}
    errs = errors_of(src, consumer(concurrency_bounds={"min": 1, "max": 4}, autoscale={"max_slots": 3, "signal": "backlog"}))
    assert set(errs) == {"pools.relay.concurrency_bounds", "pools.relay.autoscale.signal"}
    assert "batch items" in errs["pools.relay.concurrency_bounds"]
    spec, _ = validate_spec({"pools": [batch(concurrency_bounds={"min": 1, "max": 4})]})
    assert spec.pool("sweep").concurrency_bounds.max == 4
