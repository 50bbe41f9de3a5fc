"""Operator actions, for the CLI and the HTTP API: breaker status and reset, audit verification.

These take a store URL and namespace, not a running campaign: breakers are shared by every campaign
in the namespace (reputation belongs to the target, not to one campaign), and verifying an audit
file needs only the file and the trusted key. Breakers are read and reset through
:func:`fleet_ray.store.open_guardrails`, next to the store at the same URL. ::

    from fleet_ray.campaign.operator import breaker_status, reset_breaker

    reset_breaker("redis://127.0.0.1:6379/0", "fleet", "example.com", operator="alice")
"""

from __future__ import annotations

import getpass
from pathlib import Path

from fleet_ray.campaign.config import BreakerConfig, target_host
from fleet_ray.campaign.signing import load_verify_key
from fleet_ray.campaign.verify import AuditReport, verify_audit_file
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.store import open_guardrails, open_store
from fleet_ray.store.guardrails import BreakerState


def breaker_status(store_url: str, namespace: str = "fleet", target: str | None = None,
                   config: BreakerConfig | None = None) -> list[BreakerState]:
    """Every breaker in the namespace (or one target's), tripped or not."""
    g = open_guardrails(store_url, namespace)
    try:
        if target is not None:
            return [g.breaker_state(target_host(target), config)]
        return g.breaker_states(config)
    finally:
        g.close()


def reset_breaker(store_url: str, namespace: str, target: str, operator: str | None = None) -> BreakerState:
    """Close ``target``'s breaker and forget its window (the only way a tripped breaker reopens).
    Appends a ``campaign.breaker.reset`` event naming the operator. Returns the state before."""
    host = target_host(target)
    operator = operator or getpass.getuser()
    g = open_guardrails(store_url, namespace)
    store = open_store(store_url, namespace)
    try:
        before = g.breaker_state(host)
        g.breaker_reset(host)
        ts = HLC().tick()
        EventLog(store, max_len=None).append([Event(
            kind="campaign.breaker.reset", physical=ts.physical, counter=ts.counter, origin=f"operator:{operator}",
            message=f"breaker for {host} reset by {operator}",
            data={"target": host, "operator": operator, "was_tripped": before.tripped,
                  "trip_failures": before.trip_failures, "trip_samples": before.trip_samples},
        )])
        return before
    finally:
        g.close()
        store.close()


def verify_audit(path: str | Path, public_key_file: str | Path | None = None,
                 key_env: str = "FLEET_AUDIT_KEY", key_file: str | Path | None = None,
                 require_closed: bool = False) -> AuditReport:
    """Verify an NDJSON audit file against a trusted key (a public key file, or the signing key
    from ``key_file`` / ``$key_env``). ``report.first_broken`` names the first broken line;
    ``require_closed`` also fails a chain that doesn't end with ``campaign.closed`` (truncated)."""
    key = load_verify_key(public_key_file, key_env, key_file)
    return verify_audit_file(path, key, require_closed=require_closed)
