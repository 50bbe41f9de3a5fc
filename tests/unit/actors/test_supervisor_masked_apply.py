"""A spec read back masked (GET /api/v1/spec) and applied again keeps its secrets (issue 15, item 10)."""

from __future__ import annotations

import pytest

from fleet_ray.errors import SpecError
from fleet_ray.redact import MASK, redact_tree

from .conftest import echo

PROXY = {"url": "http://10.0.0.5:3128", "username": "zone-7", "password": "hunter2"}


def browser_pool(name: str = "web", slots: int = 1, **proxy: str) -> dict:
    return echo(name, slots, kind="browser", browser={"proxies": [{**PROXY, **proxy}]})


def test_a_masked_spec_applied_back_keeps_the_current_password(rig):
    sup = rig()
    sup.apply({"pools": [browser_pool()]})
    shown = redact_tree(sup.core.state.spec.model_dump(mode="json"))
    assert shown["pools"][0]["browser"]["proxies"][0]["password"] == MASK
    shown["pools"][0]["slots"] = 3  # an operator edits the count and sends the rest back as read
    result = sup.apply(shown)
    assert result.changed == ["web"]
    proxy = sup.core.state.desired["web"].browser.proxies[0]
    assert proxy.password.get_secret_value() == "hunter2" and proxy.username == "zone-7"
    assert sup.core.state.desired["web"].slots == 3


def test_a_real_new_password_replaces_the_current_one(rig):
    sup = rig()
    sup.apply({"pools": [browser_pool()]})
    sup.apply({"pools": [browser_pool(password="n3w")]})
    assert sup.core.state.desired["web"].browser.proxies[0].password.get_secret_value() == "n3w"


def test_a_mask_with_nothing_to_keep_is_refused_and_changes_nothing(rig):
    sup = rig()
    sup.apply({"pools": [browser_pool()]})
    with pytest.raises(SpecError) as e:
        sup.apply({"pools": [browser_pool(), browser_pool("new", password=MASK)]})
    assert any("pools[1]" in f and "password" in f for f in e.value.fields)
    assert set(sup.core.state.desired) == {"web"}
