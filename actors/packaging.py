"""Validating a packaged pool where its code actually exists: in a task with the pool's runtime env."""

from __future__ import annotations

from typing import Any

import ray
from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

from fleet_ray.spec.discovery import resolve_pool
from fleet_ray.spec.models import PoolSpec


@ray.remote(num_cpus=0, max_retries=0)
def resolve_in_env(pool: dict[str, Any]) -> dict[str, Any]:
    """Find the pool's automation (entry point, version pin) and validate its config, inside the
    runtime env that carries the pool's package. Raises SpecError / AutomationError like locally."""
    r = resolve_pool(PoolSpec.model_validate(pool))
    return {"batch": r.batch, "distribution": r.distribution, "installed_version": r.installed_version}


def runtime_env_for(module_dirs: list[str], scratch_dir: str) -> dict[str, Any]:
    """Upload unpacked package dirs to the cluster (GCS) if not there yet; returns a runtime env with
    their ``gcs://`` URIs. Ray only takes local paths at job level, and it garbage-collects packages
    no live actor references, so callers re-run this before creating slots (it is idempotent)."""
    return upload_py_modules_if_needed({"py_modules": list(module_dirs)}, include_gitignore=False,
                                       scratch_dir=scratch_dir)
