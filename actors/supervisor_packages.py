"""Packaged automations: the runtime envs that carry a pool's package, and validating such pools.

A pool with a ``package`` runs code the supervisor can't import: its wheel lives in the store. The
env for it (the package unpacked under ``~/.fleet-ray/packages/<namespace>`` and uploaded to the
cluster) is cached, and built again after ``PACKAGE_RECHECK_S`` (Ray garbage-collects uploads no live
actor references). :meth:`PackageEnvs.resolver` gives :func:`fleet_ray.spec.models.validate_spec` a
resolver that checks packaged pools by a task running inside their env.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_ray.control.state import FleetState
from fleet_ray.errors import AutomationError, SpecError, StoreError
from fleet_ray.ray_boundary import task_cause
from fleet_ray.spec.discovery import resolve_pool
from fleet_ray.spec.models import FleetSpec, PoolSpec, ResolvedPool
from fleet_ray.spec.packages import unpack

from .supervisor_store import StoreGateway

PACKAGE_CACHE = Path.home() / ".fleet-ray" / "packages"
PACKAGE_RECHECK_S = 60.0  # re-upload a package's py_modules if Ray garbage-collected them


class PackageEnvs:
    def __init__(self, calls: Any, gateway: StoreGateway, namespace: str, cache: Path = PACKAGE_CACHE,
                 monotonic: Callable[[], float] = time.monotonic):
        self.calls, self.gateway = calls, gateway
        self.cache = cache / namespace
        self.monotonic = monotonic
        self._envs: dict[str, tuple[float, dict[str, Any]]] = {}

    def runtime_env(self, pool: PoolSpec) -> dict[str, Any] | None:
        if not pool.package:
            return None
        cached = self._envs.get(pool.package)
        if cached is None or self.monotonic() - cached[0] > PACKAGE_RECHECK_S:
            modules = self.gateway.call(lambda s: unpack(s, pool.package, self.cache))
            if modules is None:
                raise StoreError(f"can't read package {pool.package}: {self.gateway.error}")
            cached = (self.monotonic(), self.calls.upload_package(modules, str(self.cache)))
            self._envs[pool.package] = cached
        return cached[1]

    async def resolve_packaged(self, spec: dict[str, Any], to_thread: Callable[..., Any]) -> dict[str, Any]:
        """Each packaged pool of ``spec`` resolved in its env: its resolution, or the exception it raised."""
        try:
            pools = FleetSpec.model_validate(spec).pools
        except Exception:
            return {}  # validate_spec reports the shape errors
        out: dict[str, Any] = {}
        for pool in pools:
            if not pool.package:
                continue
            try:
                env = await to_thread(self.runtime_env, pool)
                out[pool.name] = await self.calls.resolve_in_env(pool, env)
            except Exception as exc:
                out[pool.name] = exc
        return out

    @staticmethod
    def resolver(state: FleetState, remote: dict[str, Any]) -> Callable[[PoolSpec], ResolvedPool]:
        """A resolver for validate_spec: plain pools resolve here; packaged ones take what
        :meth:`resolve_packaged` found (a scale or pause of one keeps what was validated before)."""

        def resolve(pool: PoolSpec) -> ResolvedPool:
            if not pool.package:
                return resolve_pool(pool)
            found = remote.get(pool.name)
            if found is None:  # scale / pause: same package and config as validated before
                prev = state.desired.get(pool.name)
                same = prev is not None and prev.model_dump(exclude={"slots", "paused"}) == pool.model_dump(
                    exclude={"slots", "paused"})
                if not same:
                    raise SpecError([{"loc": f"pools.{pool.name}.package", "msg": "package pool needs apply()"}])
                found = {"batch": state.batch.get(pool.name, False), "distribution": None, "installed_version": None}
            if isinstance(found, BaseException):
                cause = task_cause(found)
                if isinstance(cause, SpecError):
                    raise cause
                field = "automation" if isinstance(cause, AutomationError) else "package"
                msg = f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
                raise SpecError([{"loc": f"pools.{pool.name}.{field}", "msg": f"{pool.package}: {msg}"}])
            return ResolvedPool(spec=pool, batch=found["batch"], distribution=found["distribution"],
                                installed_version=found["installed_version"])

        return resolve
