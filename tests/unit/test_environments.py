import pytest

from fleet_ray.errors import SpecError
from fleet_ray.spec.environments import diff, environments, resolve

SPEC = {
    "name": "prices",
    "pools": [
        {"name": "prices", "automation": "builtin.echo", "version": "0.1.0", "slots": 2,
         "health": {"period_s": 5}},
        {"name": "watch", "automation": "builtin.chaos"},
    ],
    "environments": {
        "staging": {"pools": {"prices": {"slots": 1, "config": {"tag": "stg-"}}}},
        "prod": {"pools": {"prices": {"slots": 8, "health": {"timeout_s": 1}},
                           "extra": {"automation": "builtin.noop", "slots": 3}}},
    },
}


def test_base_and_layers():
    assert environments(SPEC) == ["prod", "staging"]
    base = resolve(SPEC, None)
    assert "environments" not in base and base["pools"][0]["slots"] == 2
    prod = resolve(SPEC, "prod")
    prices = prod["pools"][0]
    assert prices["slots"] == 8 and prices["health"] == {"period_s": 5, "timeout_s": 1}  # nested merge
    assert prod["pools"][2] == {"name": "extra", "automation": "builtin.noop", "slots": 3}
    assert SPEC["pools"][0]["slots"] == 2  # input untouched


def test_unknown_environment_and_bad_layers_name_the_field():
    with pytest.raises(SpecError, match="environments.qa: no environment 'qa' \\(known: prod, staging\\)"):
        resolve(SPEC, "qa")
    with pytest.raises(SpecError, match="environments.x.scale"):
        resolve({"pools": [], "environments": {"x": {"scale": 2}}}, "x")


def test_diff_shows_only_real_changes():
    base, prod = resolve(SPEC, None), resolve(SPEC, "prod")
    lines = diff(base, prod)
    assert lines == [
        "+ pool extra: builtin.noop, 3 slot(s)",
        "~ prices.health.timeout_s: 3.0 -> 1.0",
        "~ prices.slots: 2 -> 8",
    ]
    assert diff(base, base) == []
    assert diff(None, base)[0].startswith("+ pool prices: builtin.echo ==0.1.0, 2 slot(s)")
    assert diff(prod, base)[0] == "- pool extra (3 slot(s) will be drained)"
