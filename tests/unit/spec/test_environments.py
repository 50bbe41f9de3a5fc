import copy

import pytest

from fleet_ray.errors import SpecError
from fleet_ray.redact import redact_tree
from fleet_ray.spec.environments import diff, environments, keep_masked, resolve
from fleet_ray.spec.models import FleetSpec

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


# -- secrets in diffs ------------------------------------------------------------------------------
SECRET_BASE = {
    "name": "s",
    "pools": [{"name": "crawl", "automation": "builtin.echo", "kind": "browser",
               "config": {"api_key": "k-OLD", "upstream": "http://bob:pw-OLD@10.0.0.1:8080/x", "tag": "a"},
               "browser": {"proxies": [{"url": "http://10.0.0.5:3128", "username": "zone-OLD",
                                        "password": "proxy-OLD"}]}}],
}


def _with(**config):
    spec = copy.deepcopy(SECRET_BASE)
    spec["pools"][0]["config"].update(config)
    return spec


def test_diff_masks_secrets_and_says_changed():
    new = _with(api_key="k-NEW", upstream="http://bob:pw-NEW@10.0.0.1:8080/x", tag="b")
    new["pools"][0]["browser"]["proxies"][0]["password"] = "proxy-NEW"
    lines = diff(SECRET_BASE, new)
    text = "\n".join(lines)
    for secret in ("k-OLD", "k-NEW", "pw-OLD", "pw-NEW", "proxy-OLD", "proxy-NEW", "zone-OLD"):
        assert secret not in text, (secret, text)
    assert lines == [
        "~ crawl.browser.proxies[0].password: changed (secret)",
        "~ crawl.config.api_key: changed (secret)",
        "~ crawl.config.tag: 'a' -> 'b'",
        "~ crawl.config.upstream: changed (secret)",
    ]


def test_diff_against_a_masked_current_spec():
    masked_current = redact_tree(SECRET_BASE)  # what GET /api/v1/spec returns
    assert diff(masked_current, masked_current) == []
    assert diff(SECRET_BASE, masked_current) == []  # masked values sent back mean "keep the current one"
    lines = diff(masked_current, SECRET_BASE)  # real values against masked ones cannot be compared
    assert "proxy-OLD" not in "\n".join(lines) and "k-OLD" not in "\n".join(lines)
    assert "~ crawl.config.api_key: set (secret; the current value is masked, not compared)" in lines


def test_an_invalid_spec_in_a_diff_is_a_spec_error_without_its_input():
    bad = _with()
    bad["pools"][0]["browser"]["proxies"][0]["url"] = "ftp://10.0.0.5:1"
    with pytest.raises(SpecError) as e:
        diff(SECRET_BASE, bad)
    assert "proxy-OLD" not in str(e.value) and "zone-OLD" not in str(e.value)


def test_keep_masked_restores_the_current_secrets_and_refuses_a_lonely_mask():
    current = FleetSpec.model_validate(SECRET_BASE)
    back = keep_masked(redact_tree(current.model_dump(mode="json")), current)
    assert back == current.model_dump(mode="json")
    assert FleetSpec.model_validate(back).pools[0].browser.proxies[0].password.get_secret_value() == "proxy-OLD"
    fresh = copy.deepcopy(SECRET_BASE)
    fresh["pools"][0]["name"] = "other"
    with pytest.raises(SpecError) as e:
        keep_masked(redact_tree(fresh), current)
    assert "pools[0].config.api_key" in e.value.fields
