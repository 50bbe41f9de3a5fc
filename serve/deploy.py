"""The API as a Ray Serve application: one replica on the head node, HTTP on 127.0.0.1 by default.

    from fleet_ray.serve.deploy import start_api
    url = start_api(namespace="fleet", port=8470, token="...")   # what `fleet-ray up` does

The deployment finds the supervisor by name (``fleet:supervisor`` in the fleet's namespace) and
never imports its class. The token is handed over as a SHA-256 digest (see :mod:`.auth`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray import serve

from fleet_ray.names import HEAD_RESOURCE

from .auth import ApiConfig, token_digest

log = logging.getLogger(__name__)

APP_PREFIX = "fleet-api"


def app_name(namespace: str) -> str:
    """Serve application name of a fleet's API (one per fleet namespace)."""
    return APP_PREFIX if namespace == "fleet" else f"{APP_PREFIX}-{namespace}"


@serve.deployment(
    name="FleetAPI",
    num_replicas=1,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}},
)
@serve.ingress()
class FleetAPI:
    """Serve deployment; the FastAPI app is built on the replica (:func:`fleet_ray.serve.app.create_app`)."""

    def __init__(self, config: dict[str, Any]):
        self._config = ApiConfig.model_validate(config)

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self._config)


def default_route_prefix(namespace: str) -> str:
    return "/" if namespace == "fleet" else f"/{namespace}"


def start_api(
    namespace: str = "fleet",
    host: str = "127.0.0.1",
    port: int = 8470,
    token: str | None = None,
    token_file: str | Path | None = None,
    read_auth: bool = False,
    status_ttl_s: float = 0.5,
    route_prefix: str | None = None,
    name: str | None = None,
) -> str:
    """Deploy (or update) the fleet's API on the connected Ray cluster and return its base URL.

    ``token`` (or the file's content) guards the control endpoints; only its digest is deployed.
    Serve's HTTP proxy runs on the head node only, bound to ``host:port``; if Serve already runs
    with another address, that one is kept and returned. ``route_prefix`` defaults to ``/`` for the
    namespace ``fleet`` and ``/<namespace>`` for others (several fleets share one Serve). ``name`` overrides the Serve application
    name (default :func:`app_name`), e.g. to run a second, read-locked API beside the first.
    """
    if token is None and token_file is not None and Path(token_file).exists():
        token = Path(token_file).read_text().strip() or None
    config = ApiConfig(
        namespace=namespace,
        token_sha256=token_digest(token) if token else None,
        token_file=str(Path(token_file).resolve()) if token_file else None,
        read_auth=read_auth,
        status_ttl_s=status_ttl_s,
    )
    route_prefix = route_prefix or default_route_prefix(namespace)
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    if (http.host, http.port) != (host, port):
        log.warning("Serve already runs on %s:%s; the API is served there", http.host, http.port)
    serve.run(
        FleetAPI.bind(config.model_dump()),
        name=name or app_name(namespace),
        route_prefix=route_prefix,
        blocking=False,
    )
    return f"http://{http.host}:{http.port}{route_prefix.rstrip('/')}"


def stop_api(namespace: str = "fleet", name: str | None = None) -> None:
    """Remove the fleet's API application (Serve itself keeps running for other apps)."""
    serve.delete(name or app_name(namespace))
