"""Browser options are validated with the spec (no Playwright needed) and never show proxy passwords."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fleet_ray.errors import SpecError
from fleet_ray.spec.browser_options import BrowserOptions, ProxySpec
from fleet_ray.spec.models import PoolSpec, ResolvedPool, validate_spec

SECRET = "hunter2-Zq9"


def _resolve(pool: PoolSpec) -> ResolvedPool:
    return ResolvedPool(spec=pool, batch=True, distribution=None, installed_version=None)


def _spec(**browser) -> dict:
    return {
        "pools": [
            {"name": "shop", "automation": "browser.page-info", "kind": "browser", "browser": browser},
        ]
    }


def test_defaults_are_valid_and_use_system_chromium():
    opts = BrowserOptions()
    assert opts.executable_path == "/usr/bin/chromium"
    assert opts.headless and opts.pages_per_browser >= 1
    spec, _ = validate_spec(_spec(), resolve=_resolve)
    assert spec.pools[0].browser == opts


@pytest.mark.parametrize(
    ("browser", "field"),
    [
        ({"pages_per_browser": 0}, "pools.shop.browser.pages_per_browser"),
        ({"block_resources": ["images"]}, "pools.shop.browser.block_resources.0"),
        ({"extra_args": ["--user-data-dir=/tmp/x"]}, "pools.shop.browser.extra_args"),
        ({"extra_args": ["no-dashes"]}, "pools.shop.browser.extra_args"),
        ({"executable_path": "chromium"}, "pools.shop.browser.executable_path"),
        ({"proxies": [{"url": "ftp://10.0.0.1:21"}]}, "pools.shop.browser.proxies.0.url"),
        ({"proxies": [{"url": "http://10.0.0.1"}]}, "pools.shop.browser.proxies.0.url"),
        ({"proxies": [{"url": "http://10.0.0.1:3128", "country": "XX"}]}, "pools.shop.browser.proxies.0.country"),
        ({"sessions": {"mode": "forever"}}, "pools.shop.browser.sessions.mode"),
        ({"identity": {"os": ["android"]}}, "pools.shop.browser.identity.os.0"),
        ({"proxy_policy": {"block_statuses": [999]}}, "pools.shop.browser.proxy_policy.block_statuses"),
    ],
)
def test_bad_options_name_the_field(browser, field):
    with pytest.raises(SpecError) as err:
        validate_spec(_spec(**browser), resolve=_resolve)
    assert field in err.value.fields, err.value.fields


def test_browser_options_only_on_browser_pools():
    spec = {"pools": [{"name": "p", "automation": "builtin.noop", "browser": {"headless": False}}]}
    with pytest.raises(SpecError) as err:
        validate_spec(spec, resolve=_resolve)
    assert "kind: browser" in str(err.value)
    # a process pool that carries only the defaults (as every dump does) stays valid
    ok = {"pools": [{"name": "p", "automation": "builtin.noop", "browser": BrowserOptions().model_dump(mode="json")}]}
    validate_spec(ok, resolve=_resolve)


def test_credentials_in_a_proxy_url_move_into_secret_fields():
    p = ProxySpec.model_validate({"url": f"http://alice:{SECRET}@10.0.0.5:3128", "country": "de"})
    assert p.url == "http://10.0.0.5:3128"
    assert p.username == "alice"
    assert p.password.get_secret_value() == SECRET
    assert p.country == "DE"
    assert SECRET not in repr(p) and SECRET not in str(p) and SECRET not in p.display
    assert "alice" not in p.display
    assert p.playwright() == {"server": "http://10.0.0.5:3128", "bypass": "<-loopback>", "username": "alice",
                              "password": SECRET}


def test_password_never_in_spec_errors():
    bad = _spec(proxies=[{"url": "http://10.0.0.5:3128", "username": "a", "password": SECRET}], pages_per_browser=-1)
    with pytest.raises(SpecError) as err:
        validate_spec(bad, resolve=_resolve)
    assert SECRET not in str(err.value)
    assert SECRET not in json.dumps(err.value.errors)


def test_authenticated_socks5_is_rejected_because_chromium_cannot_do_it():
    with pytest.raises(SpecError) as err:
        validate_spec(_spec(proxies=[{"url": "socks5://10.0.0.7:1080", "username": "u", "password": SECRET}]),
                      resolve=_resolve)
    assert "pools.shop.browser.proxies.0" in err.value.fields and "SOCKS5" in str(err.value)
    validate_spec(_spec(proxies=[{"url": "socks5://10.0.0.7:1080"}]), resolve=_resolve)


def test_json_dump_carries_the_password_to_slots_and_round_trips():
    spec, _ = validate_spec(
        _spec(proxies=[{"url": "https://10.0.0.7:8443", "username": "u", "password": SECRET}]), resolve=_resolve
    )
    dumped = spec.model_dump(mode="json")
    again, _ = validate_spec(dumped, resolve=_resolve)
    assert again.pools[0].browser.proxies[0].password.get_secret_value() == SECRET
    assert SECRET not in repr(spec) and SECRET not in str(spec.pools[0])


def test_changing_browser_options_or_a_password_replaces_slots():
    base = PoolSpec.model_validate(_spec()["pools"][0])
    other = PoolSpec.model_validate(_spec(pages_per_browser=7)["pools"][0])
    assert base.slot_shape_hash() != other.slot_shape_hash()
    p1 = PoolSpec.model_validate(_spec(proxies=[{"url": "http://h:1", "username": "u", "password": "a"}])["pools"][0])
    p2 = PoolSpec.model_validate(_spec(proxies=[{"url": "http://h:1", "username": "u", "password": "b"}])["pools"][0])
    assert p1.slot_shape_hash() != p2.slot_shape_hash()
    proc = PoolSpec(name="x", automation="builtin.noop")
    assert proc.slot_shape_hash() == PoolSpec(name="x", automation="builtin.noop").slot_shape_hash()


def test_duplicate_proxies_rejected():
    with pytest.raises(SpecError) as err:
        validate_spec(_spec(proxies=[{"url": "http://h:1"}, {"url": "http://h:1"}]), resolve=_resolve)
    assert "listed twice" in str(err.value)


def test_trace_mode_defaults_to_retries_and_reads_booleans():
    from fleet_ray.spec.browser_options import ArtifactOptions

    assert ArtifactOptions().trace == "retry"
    assert ArtifactOptions(trace=True).trace == "always" and ArtifactOptions(trace=False).trace == "off"
    with pytest.raises(ValidationError, match="trace"):
        ArtifactOptions(trace="sometimes")


def test_browser_options_on_a_process_pool_are_rejected_from_users_but_tolerated_from_the_fleets_own_records():
    pool = {"name": "web", "automation": "builtin.echo", "browser": {"pages_per_browser": 5}}

    def resolve(p):
        return ResolvedPool(p, batch=True, distribution=None)

    with pytest.raises(SpecError, match="browser options apply only to pools with kind: browser"):
        validate_spec({"pools": [pool]}, resolve=resolve)
    # a checkpoint written by another fleet-ray version whose browser defaults differ must still load
    restored = PoolSpec.model_validate({**pool, "browser": {"artifacts": {"trace": True}}})
    assert restored.kind == "process" and restored.browser == BrowserOptions()
