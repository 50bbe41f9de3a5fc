"""Keeping secrets out of API responses, and grouping failures (pure functions, no Ray)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fleet_ray.api.models import ErrorGroup
from fleet_ray.errors import redact_url

MASK = "********"
# credential-looking keys; a proxy's username counts (providers encode the account and zone in it)
SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|signing|auth|user(_?name)?$", re.I
)
_URL_CRED = re.compile(rb"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^@/\s\"']+@")


def redact_json_bytes(body: bytes) -> bytes:
    """Mask ``user:password@`` in every URL inside an already-serialised JSON document."""
    return _URL_CRED.sub(rb"\g<scheme>***@", body)


def redact_tree(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """Copy of a JSON-like tree with secret-looking keys masked and URL credentials redacted.

    ``found`` collects the dotted paths that were masked (so a client can tell what it can't see).
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            p = f"{path}.{k}" if path else str(k)
            if SECRET_KEY.search(str(k)) and v not in (None, "", {}, []) and not isinstance(v, bool | dict | list):
                out[k] = MASK
                if found is not None:
                    found.append(p)
            else:
                out[k] = redact_tree(v, p, found)
        return out
    if isinstance(value, list):
        return [redact_tree(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, str):
        return redact_url(value)
    return value


# -- grouping failures -----------------------------------------------------------------------------
FAILURE_KINDS = ("slot.died", "slot.start_failed", "slot.unhealthy", "slot.heal_escalated", "config.rejected")

_MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b(0x)?[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def signature(message: str) -> str:
    """The message with quoted values, hex ids and numbers masked, so alike failures group together."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return text[:300]


def group_errors(events: Iterable[dict[str, Any]]) -> list[ErrorGroup]:
    """Group failure events by (kind, signature); most recently seen group first."""
    groups: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("kind") not in FAILURE_KINDS:
            continue
        msg = redact_url(e.get("message") or "")
        sig = signature(msg)
        key = f"{e['kind']}|{sig}"
        at = float(e.get("physical", 0)) / 1000
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "key": key,
                "kind": e["kind"],
                "signature": sig,
                "sample": msg,
                "count": 0,
                "pools": set(),
                "slots": set(),
                "first_seen": at,
                "last_seen": at,
            }
        g["count"] += 1
        if e.get("pool"):
            g["pools"].add(e["pool"])
        if e.get("slot"):
            g["slots"].add(e["slot"])
        if at >= g["last_seen"]:
            g["last_seen"], g["sample"] = at, msg
        g["first_seen"] = min(g["first_seen"], at)
    out = [ErrorGroup(**{**g, "pools": sorted(g["pools"]), "slots": sorted(g["slots"])}) for g in groups.values()]
    return sorted(out, key=lambda g: g.last_seen, reverse=True)


def from_fleet_group(g: dict[str, Any]) -> ErrorGroup:
    """A group from the supervisor's own error grouping (exception type + first user frame) → ErrorGroup."""
    sample = g.get("sample")
    if isinstance(sample, dict):
        sample = sample.get("message") or sample.get("error") or ""
    kinds = [str(k) for k in g.get("kinds") or []]
    error_type, frame = g.get("error_type"), g.get("frame")
    return ErrorGroup(
        key=str(g.get("key", "")),
        kind=", ".join(kinds) or "error",
        signature=f"{error_type or 'error'} at {frame or '?'}",
        sample=redact_url(str(sample or "")),
        count=int(g.get("count", 0)),
        pools=sorted(g.get("pools") or []),
        slots=sorted(g.get("slots") or []),
        first_seen=float(g.get("first_seen") or 0),
        last_seen=float(g.get("last_seen") or 0),
        error_type=error_type,
        frame=frame,
        phases=sorted(str(p) for p in g.get("phases") or [] if p),
    )
