"""The desired state of a fleet: :class:`FleetSpec` → :class:`PoolSpec`, validated as a whole.

:func:`validate_spec` is the one gate every spec goes through (CLI, client, supervisor): it checks
the shape of the spec, resolves each pool's automation by entry point, checks the version pin and
validates the pool's ``config`` against the automation's config model, and checks an autoscaled
pool's signal against the automation's kind (:mod:`fleet_ray.spec.scaling`). Every problem is reported
with its location (``pools.web.config.max_pages``) and nothing is applied unless all pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fleet_ray.errors import AutomationError, SpecError
from fleet_ray.spec.browser_options import BrowserOptions, _Strict  # the spec's strict base
from fleet_ray.spec.discovery import ResolvedPool, resolve_pool
from fleet_ray.spec.scaling import AutoscalePolicy, ConcurrencyBounds, fit_to_pool, signal_errors
from fleet_ray.streams.declare import StreamOptions, check_wiring, declared, parse_stream_ref

POOL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


# validation context key: a spec given by a user (apply), checked strictly; specs the fleet wrote
# itself (checkpoints, slot starts) are read leniently where versions may differ
USER_SPEC = "fleet_ray.user_spec"


class Placement(_Strict):
    """Where a pool's slots may run."""

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom resource tags each slot needs, e.g. {'browser': 1}. A node offers them "
        "with `ray start --resources`.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels a slot's node must carry, e.g. {'region': 'eu'} (`ray start --labels`).",
    )
    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved per slot.")
    memory_mb: float = Field(0.0, ge=0, description="Memory reserved per slot, in MiB.")

    @field_validator("resources")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for k, amount in v.items():
            if amount <= 0:
                raise ValueError(f"resource {k!r} must be a positive amount, got {amount}")
            if k in ("CPU", "GPU", "memory"):
                raise ValueError(f"use num_cpus / memory_mb instead of resource {k!r}")
        return v


class HealthCheck(_Strict):
    period_s: float = Field(5.0, gt=0, description="Seconds between health checks (jittered).")
    timeout_s: float = Field(3.0, gt=0, description="A check that takes longer counts as failed.")
    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that make a slot unhealthy.")
    jitter: float = Field(0.1, ge=0, le=1, description="Fraction of the period added at random.")
    start_timeout_s: float = Field(
        60.0, gt=0, description="A slot not ready this long after its process started (setup) has failed."
    )
    unreachable_max_s: float = Field(
        120.0, gt=0, description="A slot that doesn't answer this long while Ray says it may be alive is "
        "killed; its position is refilled once Ray confirms the old process is gone (never before).",
    )


class RecyclePolicy(_Strict):
    max_tasks: int | None = Field(None, ge=1, description="Recycle after this many tasks.")
    max_age_s: float | None = Field(None, gt=0, description="Recycle after this many seconds.")
    max_rss_mb: float | None = Field(None, gt=0, description="Recycle above this resident memory.")
    drain_timeout_s: float = Field(30.0, ge=0, description="Grace for in-flight work before a kill.")


class HealPolicy(_Strict):
    window_s: float = Field(300.0, gt=0, description="Window in which failures of one slot position count.")
    max_failures: int = Field(3, ge=1, description="Failures within the window before backing off.")
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)


class RolloutPolicy(_Strict):
    max_unavailable: int = Field(
        1, ge=1, description="Slots of a pool replaced at once when a spec change needs fresh slots."
    )
    failure_threshold: int = Field(
        3, ge=1, description="Failures of new-version slots during a rollout before it is rolled back."
    )


class WorkQueueOptions(_Strict):
    """A batch pool's work queue (``fleet:<pool>:work``)."""

    durable: bool = Field(
        True, description="Write submitted items, leases and results to the fleet's store before acknowledging "
        "them, so a work queue that dies (or a head node that restarts) loses nothing. false: in memory only.",
    )
    finished_job_ttl_s: float = Field(
        3 * 86400.0, gt=0, description="A finished job's unread results are kept this long, then the job is forgotten.",
    )
    lease_timeout_s: float = Field(
        30.0, gt=0, description="After a restart, items leased to a slot that doesn't come back within this "
        "are handed to other slots.",
    )


SlotKind = Literal["process", "browser"]


class PoolSpec(_Strict):
    name: str = Field(pattern=POOL_NAME_PATTERN, description="Pool name: lowercase letters, digits, '-'.")
    automation: str = Field(min_length=1, description="Entry-point name in group fleet_ray.automations.")
    version: str | None = Field(
        None, description="Pin of the automation's distribution: '1.2.0' or a specifier like '>=1.2,<2'."
    )
    package: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+$",
        description="A package published with `fleet-ray publish` ('name==version'); its slots get it "
        "through their Ray runtime environment, so hosts need no install.",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Validated by the automation's Config.")
    slots: int = Field(
        1, ge=0, le=10_000,
        description="Desired number of slots; with autoscale, the starting size (default: autoscale.min_slots).",
    )
    autoscale: AutoscalePolicy | None = Field(
        None, description="Size the pool by its backlog or consumer lag between min_slots and max_slots "
        "(fleet_ray.spec.scaling) instead of a fixed slots count.",
    )
    kind: SlotKind = "process"
    concurrency: int = Field(
        1, ge=1, le=1000,
        description="Batch items a slot works on at once; with concurrency_bounds, the starting value.",
    )
    concurrency_bounds: ConcurrencyBounds | None = Field(
        None, description="Batch pools: how far each slot's concurrency moves with its host's pressure (CPU, "
        "memory, event-loop lag, Chromium memory), starting at concurrency; each slot decides every interval_s "
        "and reports its value in status and each change as a slot.concurrency event.",
    )
    max_item_retries: int = Field(3, ge=0, description="Re-runs of an item whose slot died under it.")
    placement: Placement = Field(default_factory=Placement)
    health: HealthCheck = Field(default_factory=HealthCheck)
    recycle: RecyclePolicy = Field(default_factory=RecyclePolicy)
    heal: HealPolicy = Field(default_factory=HealPolicy)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    paused: bool = Field(False, description="A paused pool keeps its slots but leases them no work.")
    work_queue: WorkQueueOptions = Field(
        default_factory=WorkQueueOptions, description="The batch work queue: durable or in memory, retention."
    )
    browser: BrowserOptions = Field(
        default_factory=BrowserOptions, description="Chromium, identity and proxy options of kind: browser."
    )
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="Wires each input the automation declares to a stream '<pool>.<output>', "
        "e.g. {'products': 'scrape.products'}. Checked against both models at apply time.",
    )
    streams: dict[str, StreamOptions] = Field(
        default_factory=dict, description="Bounds of the pool's output streams by output name (capacity, bytes)."
    )
    task_events: bool = Field(
        False, description="Emit task.started/task.finished per batch item (task.failed is always emitted)."
    )

    @field_validator("inputs")
    @classmethod
    def _stream_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for ref in v.values():
            parse_stream_ref(ref)
        return v

    @field_validator("version")
    @classmethod
    def _specifier(cls, v: str | None) -> str | None:
        if v is None:
            return v
        text = v.strip()
        if text and text[0].isdigit():
            text = f"=={text}"
        try:
            SpecifierSet(text)
        except InvalidSpecifier as exc:
            raise ValueError(f"not a version or version specifier: {v!r}") from exc
        return text

    @model_validator(mode="after")
    def _browser_only_for_browser_kind(self, info: ValidationInfo) -> PoolSpec:
        if self.kind != "browser" and self.browser != BrowserOptions():
            if info.context and info.context.get(USER_SPEC):
                raise ValueError("browser options apply only to pools with kind: browser")
            # a spec this fleet wrote itself (checkpoint, slot start) by another fleet-ray version,
            # whose browser defaults differ: they mean nothing for this kind, so don't fail recovery
            self.browser = BrowserOptions()
        return self

    @model_validator(mode="after")
    def _fits_autoscale(self) -> PoolSpec:
        fit_to_pool(self)  # errors name their own fields (pools.web.slots, pools.web.autoscale.stream)
        return self

    def slot_shape_hash(self) -> str:
        """Hash of everything that can only change by replacing slots (not the config)."""
        shape = self.model_dump(include={"automation", "version", "package", "kind", "placement", "concurrency"})
        if self.kind == "browser":
            shape["browser"] = self.browser.model_dump(mode="json")
        if self.inputs or self.streams:  # stream wiring is read when a slot starts
            shape["streams"] = {"inputs": self.inputs, "outputs": {k: v.model_dump() for k, v in self.streams.items()}}
        return _digest(shape)

    def config_hash(self) -> str:
        return _digest(self.config)


class FleetSpec(_Strict):
    name: str = Field("fleet", pattern=POOL_NAME_PATTERN)
    pools: list[PoolSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_pools(self) -> FleetSpec:
        seen: set[str] = set()
        for p in self.pools:
            if p.name in seen:
                raise ValueError(f"pool name {p.name!r} appears twice")
            seen.add(p.name)
        return self

    def pool(self, name: str) -> PoolSpec | None:
        return next((p for p in self.pools if p.name == name), None)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _loc(parts: tuple[Any, ...], pools: list[Any]) -> str:
    """Turn pydantic's ('pools', 0, 'config') into 'pools.web.config'."""
    out: list[str] = []
    it = iter(range(len(parts)))
    for i in it:
        p = parts[i]
        if p == "pools" and i + 1 < len(parts) and isinstance(parts[i + 1], int):
            idx = parts[i + 1]
            name = None
            if 0 <= idx < len(pools) and isinstance(pools[idx], Mapping):
                name = pools[idx].get("name")
            out.append(f"pools.{name}" if isinstance(name, str) and name else f"pools[{idx}]")
            next(it, None)
        else:
            out.append(str(p))
    return ".".join(out)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a plain dict (not yet validated)."""
    text = Path(path).read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SpecError([{"loc": str(path), "msg": "a spec file must hold a mapping with a 'pools' list"}])
    return data


def validate_spec(
    data: FleetSpec | Mapping[str, Any],
    resolve: Callable[[PoolSpec], ResolvedPool] | None = None,
) -> tuple[FleetSpec, dict[str, ResolvedPool]]:
    """Validate a whole spec. Raises :class:`SpecError` listing every problem, naming pool and field.

    ``resolve`` finds a pool's automation and validates its config; it defaults to entry-point
    discovery (:func:`fleet_ray.spec.discovery.resolve_pool`). Tests pass their own.
    """
    raw = data.model_dump() if isinstance(data, FleetSpec) else dict(data)
    try:
        spec = FleetSpec.model_validate(raw, context={USER_SPEC: True})
    except ValidationError as exc:
        pools = raw.get("pools") if isinstance(raw.get("pools"), list) else []
        raise SpecError(
            [{"loc": _loc(tuple(e["loc"]), pools) or "spec", "msg": e["msg"]} for e in exc.errors()]
        ) from None
    resolve = resolve or resolve_pool
    errors: list[dict[str, Any]] = []
    resolved: dict[str, ResolvedPool] = {}
    for pool in spec.pools:
        try:
            resolved[pool.name] = resolve(pool)
        except SpecError as exc:
            errors.extend(exc.errors)
        except AutomationError as exc:
            errors.append({"loc": f"pools.{pool.name}.automation", "msg": str(exc)})
    errors.extend(_stream_wiring_errors(spec, resolved))
    for pool in spec.pools:
        r = resolved.get(pool.name)
        if r is not None:  # a placeholder resolution (a packaged pool seen from the driver) knows no kind
            known = r.automation_cls is not None or r.installed_version is not None
            errors.extend(signal_errors(pool, r.batch if known else None))
    if errors:
        raise SpecError(errors)
    return spec, resolved


def _stream_wiring_errors(spec: FleetSpec, resolved: dict[str, ResolvedPool]) -> list[dict[str, Any]]:
    """Inputs wired to streams that exist and carry a compatible model (see :mod:`fleet_ray.streams.declare`)."""
    decls: dict[str, tuple[dict, dict]] = {}
    errors: list[dict[str, Any]] = []
    for name, r in resolved.items():
        cls = getattr(r, "automation_cls", None)
        if cls is None:
            continue  # resolved elsewhere (e.g. a packaged pool, in its runtime env): declarations unknown here
        try:
            decls[name] = (declared(cls, "outputs"), declared(cls, "inputs"))
        except AutomationError as exc:
            errors.append({"loc": f"pools.{name}.automation", "msg": str(exc)})
    unresolved = {p.name for p in spec.pools if p.name not in decls}
    pools = [p for p in spec.pools if p.name in decls
             and not any(parse_stream_ref(ref)[0] in unresolved for ref in p.inputs.values())]
    return errors + check_wiring(pools, decls)
