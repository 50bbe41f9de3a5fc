"""Layered specs: a base spec plus per-environment overrides, and the diff an apply would make.

A spec file may carry an ``environments`` section whose entries override pools by name::

    pools:
      - {name: prices, automation: example.prices, package: "acme-prices==1.2.4", slots: 2}
    environments:
      staging:
        pools:
          prices: {package: "acme-prices==1.3.0", slots: 1}
      prod:
        pools:
          prices: {slots: 8}

``fleet-ray apply spec.yaml --env prod`` shows what will change, then applies; ``--dry-run`` only
shows. Overrides merge into the base pool (nested mappings merge, anything else replaces); a pool
named only in an environment is added there. The diff never shows a secret (see :func:`diff`), and
:func:`keep_masked` turns masked values sent back into "keep the current one" (the supervisor's apply).
Pure functions, no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fleet_ray.errors import SpecError
from fleet_ray.redact import is_masked_form, is_secret_key, redact_text, redact_tree, restore_masked
from fleet_ray.spec.models import FleetSpec


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def environments(data: Mapping[str, Any]) -> list[str]:
    envs = data.get("environments") or {}
    return sorted(envs) if isinstance(envs, Mapping) else []


def resolve(data: Mapping[str, Any], env: str | None) -> dict[str, Any]:
    """The spec for ``env`` (or the base when None), without the ``environments`` section."""
    base = {k: copy.deepcopy(v) for k, v in data.items() if k != "environments"}
    if env is None:
        return base
    envs = data.get("environments") or {}
    if not isinstance(envs, Mapping) or env not in envs:
        known = ", ".join(environments(data)) or "none defined"
        raise SpecError([{"loc": f"environments.{env}", "msg": f"no environment {env!r} (known: {known})"}])
    layer = envs[env] or {}
    unknown = set(layer) - {"pools", "name"}
    if unknown:
        raise SpecError([{"loc": f"environments.{env}.{k}", "msg": "only 'pools' and 'name' can be overridden"}
                         for k in sorted(unknown)])
    if "name" in layer:
        base["name"] = layer["name"]
    overrides = layer.get("pools") or {}
    if not isinstance(overrides, Mapping):
        raise SpecError([{"loc": f"environments.{env}.pools", "msg": "must map pool names to overrides"}])
    pools = list(base.get("pools") or [])
    names = [p.get("name") if isinstance(p, Mapping) else None for p in pools]
    for name, override in overrides.items():
        if not isinstance(override, Mapping):
            raise SpecError([{"loc": f"environments.{env}.pools.{name}", "msg": "must be a mapping of fields"}])
        if name in names:
            i = names.index(name)
            pools[i] = _merge(pools[i], override)
        else:
            pools.append({"name": name, **copy.deepcopy(dict(override))})
    base["pools"] = pools
    return base


def keep_masked(new: Mapping[str, Any], current: FleetSpec | Mapping[str, Any] | None) -> dict[str, Any]:
    """``new`` with every masked value (as ``GET /api/v1/spec`` shows it: ``********`` under a secret
    key, ``scheme://***@host`` in a URL) replaced by the current value at the same place: a spec read
    back and applied again keeps its secrets instead of setting them to the mask. Pools match by name,
    list items by ``name``/``id``/``url`` or position. A masked value with no current one to keep is a
    :class:`~fleet_ray.errors.SpecError` (the mask is never taken as the secret)."""
    if isinstance(current, FleetSpec):
        current = current.model_dump(mode="json")
    unresolved: list[str] = []
    out = restore_masked(dict(new), dict(current or {}), "", unresolved)
    if unresolved:
        raise SpecError([{"loc": loc, "msg": "a masked value with no current value to keep; send the real one"}
                         for loc in unresolved])
    return out


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, list) and value and any(isinstance(v, Mapping | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _secret_at(key: str, *values: Any) -> bool:
    """Whether the leaf at ``key`` holds a secret: a secret-looking key (or an item of a list under
    one), or a value that redaction would change (URL credentials, tokens in a path...)."""
    parts = re.split(r"[.\[\]]+", key)
    names = [p for p in parts if p and not p.isdigit()]
    if names and is_secret_key(names[-1]):
        return True
    return any(redact_tree(v) != v for v in values if v is not None)


def _show(value: Any) -> str:
    return repr(redact_tree(value))


def diff(current: FleetSpec | Mapping[str, Any] | None, new: FleetSpec | Mapping[str, Any]) -> list[str]:
    """Human-readable changes from ``current`` to ``new`` (both normalised, so defaults don't show).

    Secrets never show: a changed secret reads ``changed (secret)``. ``current`` may come masked (from
    ``GET /api/v1/spec``): a masked value in ``new`` means "keep the current one" (no change), and a real
    value against a masked current one reads ``set (secret; the current value is masked, not compared)``.
    """
    def pools(spec) -> dict[str, dict[str, Any]]:
        if spec is None:
            return {}
        try:
            model = spec if isinstance(spec, FleetSpec) else FleetSpec.model_validate(spec)
        except ValidationError as exc:  # listed without Pydantic's echo of the input (secrets)
            raise SpecError([{"loc": ".".join(str(p) for p in e["loc"]) or "spec", "msg": redact_text(e["msg"])}
                             for e in exc.errors(include_input=False, include_url=False)]) from None
        return {p.name: p.model_dump(mode="json") for p in model.pools}

    old, nxt = pools(current), pools(new)
    lines: list[str] = []
    for name in sorted(set(old) | set(nxt)):
        if name not in old:
            p = nxt[name]
            pin = f" {p['package'] or p['version'] or ''}".rstrip()
            lines.append(redact_text(f"+ pool {name}: {p['automation']}{pin}, {p['slots']} slot(s)"))
        elif name not in nxt:
            lines.append(f"- pool {name} ({old[name]['slots']} slot(s) will be drained)")
        else:
            kept = restore_masked(nxt[name], old[name])  # masked values sent back mean "keep"
            a, b = _flatten(old[name], name), _flatten(kept, name)
            for key in sorted(set(a) | set(b)):
                before, after = a.get(key), b.get(key)
                if before == after:
                    continue
                if not _secret_at(key, before, after):
                    lines.append(f"~ {key}: {_show(before)} -> {_show(after)}")
                elif is_masked_form(before) and not is_masked_form(after) and after is not None:
                    lines.append(f"~ {key}: set (secret; the current value is masked, not compared)")
                else:
                    lines.append(f"~ {key}: changed (secret)")
    return lines
