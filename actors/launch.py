"""Starting the fleet's long-lived actors (used by ``fleet-ray up`` / ``demo`` and by tests)."""

from __future__ import annotations

import os
import time

import ray

from fleet_ray.errors import FleetNotRunning
from fleet_ray.names import HEAD_RESOURCE, SUPERVISOR_NAME
from fleet_ray.store import open_store, url_for_actors

from .priority import ENV
from .supervisor import Supervisor


def start_supervisor(
    store_url: str, namespace: str = "fleet", fleet_name: str = "fleet", tick_s: float = 0.1, timeout_s: float = 60
):
    """Create the supervisor (or return the running one). The store is checked first, so an
    unreachable Redis fails here with its (redacted) URL instead of inside an actor."""
    store_url = url_for_actors(store_url)  # a password travels in a file, never in actor arguments
    store = open_store(store_url, namespace)
    store.ping()
    store.close()
    handle = Supervisor.options(
        name=SUPERVISOR_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        resources={HEAD_RESOURCE: 0.001},
        max_concurrency=1000,
        # the driver's choice of the supervisor's CPU priority travels with it (actors/priority.py)
        **({"runtime_env": {"env_vars": {ENV: os.environ[ENV]}}} if ENV in os.environ else {}),
    ).remote(store_url, namespace, fleet_name, tick_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ray.get(handle.is_ready.remote(), timeout=5):
                return handle
        except ray.exceptions.GetTimeoutError:
            pass
        if time.monotonic() > deadline:
            raise FleetNotRunning(f"supervisor did not become ready within {timeout_s:g}s")
        time.sleep(0.05)
