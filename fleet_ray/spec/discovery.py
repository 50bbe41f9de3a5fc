"""Finding automations through the entry-point group ``fleet_ray.automations``.

An automation package declares, in its ``pyproject.toml``::

    [project.entry-points."fleet_ray.automations"]
    "acme.prices" = "acme_prices:PriceWatch"

and a pool names it as ``automation: acme.prices``. The distribution's installed version is
checked against the pool's ``version`` pin wherever the automation is loaded (supervisor and slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import ValidationError

from fleet_ray.automation import Automation, BatchAutomation, ContinuousAutomation
from fleet_ray.errors import (
    AutomationError,
    AutomationNotFound,
    AutomationVersionMismatch,
    SpecError,
)

if TYPE_CHECKING:  # models validates specs through this module; it needs nothing from models at run time
    from fleet_ray.spec.models import PoolSpec

GROUP = "fleet_ray.automations"


@dataclass(frozen=True)
class FoundAutomation:
    name: str
    cls: type[Automation]
    distribution: str | None
    version: str | None


@dataclass(frozen=True)
class ResolvedPool:
    """A pool whose automation was found and whose config validated."""

    spec: PoolSpec
    batch: bool
    distribution: str | None
    installed_version: str | None
    automation_cls: type | None = None  # for the stream wiring check (outputs / inputs declarations)


def available() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def find(name: str, pin: str | None = None) -> FoundAutomation:
    """Load the automation registered as ``name`` and check the version pin."""
    eps = available()
    ep = eps.get(name)
    if ep is None:
        raise AutomationNotFound(name, list(eps))
    dist_name = ep.dist.name if ep.dist is not None else None
    version = ep.dist.version if ep.dist is not None else None
    if pin:
        if version is None or Version(version) not in SpecifierSet(pin):
            raise AutomationVersionMismatch(name, dist_name or "?", version or "unknown", pin)
    try:
        cls = ep.load()
    except Exception as exc:  # an import error in user code
        raise AutomationError(f"automation {name!r} ({ep.value}) failed to import: {exc!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, (BatchAutomation, ContinuousAutomation))):
        raise AutomationError(
            f"entry point {name!r} ({ep.value}) is not a BatchAutomation or ContinuousAutomation subclass"
        )
    return FoundAutomation(name, cls, dist_name, version)


def validate_config(pool: PoolSpec, cls: type[Automation]):
    """Validate a pool's config against the automation's model, naming the pool and field."""
    try:
        return cls.config_model().model_validate(pool.config)
    except ValidationError as exc:
        raise SpecError(
            [
                {
                    "loc": ".".join(["pools", pool.name, "config", *map(str, e["loc"])]),
                    "msg": e["msg"],
                }
                for e in exc.errors()
            ]
        ) from None


def resolve_pool(pool: PoolSpec) -> ResolvedPool:
    found = find(pool.automation, pool.version)
    validate_config(pool, found.cls)
    return ResolvedPool(
        spec=pool,
        batch=issubclass(found.cls, BatchAutomation),
        distribution=found.distribution,
        installed_version=found.version,
        automation_cls=found.cls,
    )
