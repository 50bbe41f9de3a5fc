"""Which stores an actor on another host opens itself and which it reaches through the relay, and
that a password never travels with the URL. The relay's round trips run on real clusters: the campaign
tests (tests/integration/test_campaign_ray.py, test_campaign_guardrails_ray.py), whose members on
other nodes reach a loopback Redis through it, and the multi-host suite (tests/integration/multihost)."""

from __future__ import annotations

import pytest

from fleet_ray.actors.store_relay import (
    GUARDRAIL_METHODS,
    STORE_METHODS,
    RelayedGuardrails,
    RelayedStore,
    reachable_everywhere,
)
from fleet_ray.errors import StoreError
from fleet_ray.store import url_for_actors
from fleet_ray.store.base import Store
from fleet_ray.store.guardrails import GuardrailState


@pytest.mark.parametrize(("url", "everywhere"), [
    ("redis://10.0.0.5:6390/1", True),
    ("redis://redis.internal.example:6379/0", True),  # unresolvable here: opened directly, fails on its own
    ("redis://127.0.0.1:6390/1", False),
    ("redis://127.0.0.2:6390/1", False),
    ("redis://[::1]:6390/1", False),
    ("redis://localhost:6379/0", False),
    ("unix:///run/redis.sock", False),
    ("sqlite:///var/lib/fleet/store.db", False),
    ("memory://", True),
])
def test_only_stores_every_host_can_open_skip_the_relay(url, everywhere):
    assert reachable_everywhere(url) is everywhere


def test_a_password_in_a_url_handed_to_actors_is_refused_naming_the_setting():
    with pytest.raises(StoreError) as exc:
        url_for_actors("redis://:s3cret@10.0.0.5:6390/1")
    assert "FLEET_STORE_PASSWORD_FILE" in str(exc.value) and "s3cret" not in str(exc.value)
    assert url_for_actors("redis://10.0.0.5:6390/1") == "redis://10.0.0.5:6390/1"
    assert url_for_actors("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


def test_relayed_clients_cover_the_protocols_and_nothing_else():
    def protocol_methods(proto) -> set[str]:
        return {n for n in dir(proto) if not n.startswith("_")} - {"close"}

    assert protocol_methods(Store) == STORE_METHODS
    assert protocol_methods(GuardrailState) == GUARDRAIL_METHODS
    calls = []

    class Client:
        url = "redis://127.0.0.1:6390/1"

        def call(self, kind, method, args, kwargs):
            calls.append((kind, method, args, kwargs))
            return "ok"

    assert RelayedStore(Client()).put("k", b"v") == "ok"
    assert RelayedGuardrails(Client()).reserve("h", 1.0, 1, max_wait_s=2) == "ok"
    assert calls == [("store", "put", ("k", b"v"), {}), ("guardrails", "reserve", ("h", 1.0, 1), {"max_wait_s": 2})]
    with pytest.raises(AttributeError):
        RelayedStore(Client()).flushall  # noqa: B018 - not a store method: not forwarded
