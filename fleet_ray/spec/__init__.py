"""The desired state and everything that validates it: pure, no Ray.

- :mod:`~fleet_ray.spec.models` — :class:`FleetSpec` → :class:`PoolSpec` and :func:`validate_spec`, the one
  gate every spec goes through;
- :mod:`~fleet_ray.spec.browser_options` — per-pool options of browser slots;
- :mod:`~fleet_ray.spec.discovery` — finding automations through the ``fleet_ray.automations`` entry points;
- :mod:`~fleet_ray.spec.environments` — layered specs and the diff an apply would make;
- :mod:`~fleet_ray.spec.packages` — automation wheels published into the store.

May import: :mod:`fleet_ray.errors`, :mod:`fleet_ray.automation`, :mod:`fleet_ray.streams`, the store
(packages only). Never Ray.
"""

from fleet_ray.spec.models import (
    FleetSpec,
    HealPolicy,
    HealthCheck,
    Placement,
    PoolSpec,
    RecyclePolicy,
    ResolvedPool,
    RolloutPolicy,
    load_spec_file,
    validate_spec,
)

__all__ = [
    "FleetSpec",
    "HealPolicy",
    "HealthCheck",
    "Placement",
    "PoolSpec",
    "RecyclePolicy",
    "ResolvedPool",
    "RolloutPolicy",
    "load_spec_file",
    "validate_spec",
]
