"""Validating a packaged pool where its code actually exists: in a task with the pool's runtime env."""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0, max_retries=0)
def resolve_in_env(pool: dict[str, Any]) -> dict[str, Any]:
    """Find the pool's automation (entry point, version pin) and validate its config, inside the
    runtime env that carries the pool's package. Raises SpecError / AutomationError like locally."""
    from fleet_ray.discovery import resolve_pool
    from fleet_ray.spec import PoolSpec

    r = resolve_pool(PoolSpec.model_validate(pool))
    return {"batch": r.batch, "distribution": r.distribution, "installed_version": r.installed_version}
