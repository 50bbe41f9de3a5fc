"""The store as seen from a host that can't open it: a relay actor beside the store, and clients for it.

The fleet's store is often reachable from one host only: the embedded SQLite file lives on the head's
disk, and ``deploy/fleet-node.sh head`` binds the fleet's Redis to the head's ``127.0.0.1``. Actors on
other hosts (slots writing their crash context, campaign members taking rate-limit tokens and feeding
the breaker) reach it through a :class:`StoreRelay` instead: a threaded actor on the node that opened
the store (the head, for a fleet: :data:`~fleet_ray.names.STORE_RELAY_NAME`; the driver's node, for a
campaign), which runs each call against the real store there. The relay holds no state of its own,
so the store stays the one truth for every host: cluster-wide rate limits, breakers and crash records
stay cluster-wide with the embedded store too, and no host but the store's own needs a password or a
route to it.

:func:`open_store_near` / :func:`open_guardrails_near` pick the path in the calling actor: a store that
every host can reach (a Redis URL naming a non-loopback host, ``memory://``) or an actor on the relay's
own node opens it directly; anything else goes through the relay. A relay that can't be reached is
:class:`~fleet_ray.errors.StoreUnavailable`, like a store that can't — callers already ride out an
outage of the store.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fleet_ray.errors import StoreUnavailable
from fleet_ray.names import HEAD_RESOURCE
from fleet_ray.ray_boundary import short_cause
from fleet_ray.redact import redact_url
from fleet_ray.store import GuardrailState, Store, open_guardrails, open_store, store_backend, url_for_actors

log = logging.getLogger(__name__)

# What a relay runs: the Store and GuardrailState protocols' methods, nothing else.
STORE_METHODS = frozenset({"ping", "get", "put", "put_many", "delete", "incr", "raise_to", "keys",
                           "log_append", "log_range", "log_len", "log_trim"})
GUARDRAIL_METHODS = frozenset({"reserve", "breaker_record", "breaker_state", "breaker_states", "breaker_reset",
                               "claim", "release", "shared_get", "shared_put"})
CALL_TIMEOUT_S = 30.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class StoreRelay:
    """Runs store and guardrail calls for actors on other hosts against the store on this node."""

    def __init__(self, url: str, namespace: str):
        self._url, self._namespace = url, namespace
        self._store: Store | None = None
        self._guardrails: GuardrailState | None = None

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def serves(self) -> tuple[str, str]:
        """The store this relay opens (URL without a password, namespace)."""
        return self._url, self._namespace

    def store(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method not in STORE_METHODS:
            raise ValueError(f"not a store method: {method!r}")
        if self._store is None:
            self._store = open_store(self._url, self._namespace)
        return getattr(self._store, method)(*args, **kwargs)

    def guardrails(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method not in GUARDRAIL_METHODS:
            raise ValueError(f"not a guardrail method: {method!r}")
        if self._guardrails is None:
            self._guardrails = open_guardrails(self._url, self._namespace)
        return getattr(self._guardrails, method)(*args, **kwargs)


def ensure_relay(name: str, url: str, namespace: str, node_id: str | None = None, detached: bool = True) -> Any:
    """The relay ``name`` (created if it doesn't exist) on ``node_id`` (the caller's node, the one that
    can open the store) or, without one, on the head node. Ray restarts it if it dies. ``detached``
    (the fleet's) outlives its creator; otherwise (a campaign's) it goes with the driver."""
    placement: dict[str, Any] = (
        {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)} if node_id
        else {"resources": {HEAD_RESOURCE: 0.001}})
    url = url_for_actors(url)

    def make():
        return StoreRelay.options(name=name, namespace=namespace, get_if_exists=True, max_concurrency=64,
                                  **({"lifetime": "detached"} if detached else {}), **placement).remote(url, namespace)

    relay = make()
    try:  # a relay left by an earlier fleet (killed, never brought down) may serve another store
        stale = ray.get(relay.serves.remote(), timeout=CALL_TIMEOUT_S) != (url, namespace)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
        log.warning("store relay %s doesn't answer yet: %s", name, short_cause(exc))
        return relay
    if stale:
        log.warning("store relay %s served another store: replacing it", name)
        ray.kill(relay, no_restart=True)
        relay = make()
    return relay


def reachable_everywhere(url: str) -> bool:
    """True for a store every host opens itself: ``memory://`` (per process anyway) or a Redis server
    named by a host that isn't loopback. SQLite files and loopback servers belong to one host."""
    backend, where = store_backend(url)
    if backend == "memory":
        return True
    if backend != "redis" or where.startswith("unix://"):
        return False
    host = urlsplit(where).hostname or "localhost"
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except OSError:
        return True  # unresolvable here: opening it directly says so with the store's own error


class _RelayClient:
    """One relay's handle, found by name, called with a deadline; its failures are StoreUnavailable."""

    def __init__(self, handle: Any, name: str, url: str):
        self._handle, self._name, self.url = handle, name, redact_url(url)

    def call(self, kind: str, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            return ray.get(getattr(self._handle, kind).remote(method, args, kwargs), timeout=CALL_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            raise StoreUnavailable(self.url, f"through the store relay {self._name}: {short_cause(exc)}") from None


class RelayedStore:
    """A :class:`~fleet_ray.store.base.Store` whose calls run on the relay's node."""

    def __init__(self, client: _RelayClient):
        self._client = client
        self.url = client.url

    def __getattr__(self, method: str) -> Any:
        if method not in STORE_METHODS:
            raise AttributeError(method)
        return lambda *args, **kwargs: self._client.call("store", method, args, kwargs)

    def close(self) -> None:
        pass


class RelayedGuardrails:
    """A :class:`~fleet_ray.store.guardrails.GuardrailState` whose calls run on the relay's node."""

    def __init__(self, client: _RelayClient):
        self._client = client
        self.url = client.url

    def __getattr__(self, method: str) -> Any:
        if method not in GUARDRAIL_METHODS:
            raise AttributeError(method)
        return lambda *args, **kwargs: self._client.call("guardrails", method, args, kwargs)

    def close(self) -> None:
        pass


def _relay_if_needed(url: str, namespace: str, relay: str) -> _RelayClient | None:
    """The relay to go through from this actor, or None to open the store directly."""
    if reachable_everywhere(url):
        return None
    try:
        handle = ray.get_actor(relay, namespace=namespace)
        node = ray.get(handle.node.remote(), timeout=CALL_TIMEOUT_S)
    except ValueError:
        raise StoreUnavailable(redact_url(url), f"the store relay {relay} does not exist (yet)") from None
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
        raise StoreUnavailable(redact_url(url), f"the store relay {relay}: {short_cause(exc)}") from None
    if node == ray.get_runtime_context().get_node_id():
        return None
    return _RelayClient(handle, relay, url)


def open_store_near(url: str, namespace: str, relay: str) -> Store:
    """The store for an actor anywhere in the cluster: direct where it can be opened, else via ``relay``."""
    client = _relay_if_needed(url, namespace, relay)
    return open_store(url, namespace) if client is None else RelayedStore(client)  # type: ignore[return-value]


def open_guardrails_near(url: str, namespace: str, relay: str) -> GuardrailState:
    """Campaign guardrail state for an actor anywhere: direct where it can be opened, else via ``relay``."""
    client = _relay_if_needed(url, namespace, relay)
    return open_guardrails(url, namespace) if client is None else RelayedGuardrails(client)  # type: ignore[return-value]
