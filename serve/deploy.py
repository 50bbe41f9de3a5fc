"""The API as a Ray Serve application: one replica on the head node, HTTP on 127.0.0.1 by default.

    from fleet_ray.serve.deploy import start_api
    url = start_api(namespace="fleet", port=8470, token="...")   # what `fleet-ray up` does

The deployment finds the supervisor by name (``fleet:supervisor`` in the fleet's namespace) and
never imports its class. The token is handed over as a SHA-256 digest (see :mod:`.auth`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

import psutil
from ray import serve

from fleet_ray.names import HEAD_RESOURCE
from fleet_ray.settings import Settings

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


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _host_entry(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{host}:{port}"


def allowed_hosts(host: str, port: int, extra: list[str] | str | None = None) -> list[str]:
    """The ``Host`` values the API answers for when bound to ``host:port``: loopback names and the
    bound host with the port, plus ``extra`` (a list, or FLEET_API_ALLOWED_HOSTS's comma-separated
    text). Bound to every address (0.0.0.0 / ::), the machine's name and interface addresses count
    as the bound host."""
    if isinstance(extra, str):
        extra = [h.strip() for h in extra.split(",") if h.strip()]
    names: list[str] = list(LOOPBACK_NAMES)
    if host in ("0.0.0.0", "::", ""):
        names += [socket.gethostname(), socket.getfqdn()]
        names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family in (socket.AF_INET, socket.AF_INET6)]
    else:
        names.append(host)
    out = [_host_entry(n.strip("[]"), port) for n in names]
    return list(dict.fromkeys([*out, *(extra or [])]))


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
    extra_hosts: list[str] | None = None,
) -> str:
    """Deploy (or update) the fleet's API on the connected Ray cluster and return its base URL.

    ``token`` (or the file's content) guards the control endpoints; only its digest is deployed.
    Serve's HTTP proxy runs on the head node only, bound to ``host:port``; if Serve already runs
    with another address, that one is kept and returned. ``route_prefix`` defaults to ``/`` for the
    namespace ``fleet`` and ``/<namespace>`` for others (several fleets share one Serve). ``name`` overrides the Serve application
    name (default :func:`app_name`), e.g. to run a second, read-locked API beside the first.
    Requests must name the API in ``Host`` (:func:`allowed_hosts`; ``extra_hosts`` defaults to
    FLEET_API_ALLOWED_HOSTS), so a DNS-rebinding page can't read it.
    """
    if token is None and token_file is not None and Path(token_file).exists():
        token = Path(token_file).read_text().strip() or None
    route_prefix = route_prefix or default_route_prefix(namespace)
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    if (http.host, http.port) != (host, port):
        log.warning("Serve already runs on %s:%s; the API is served there", http.host, http.port)
    config = ApiConfig(
        namespace=namespace,
        token_sha256=token_digest(token) if token else None,
        token_file=str(Path(token_file).absolute()) if token_file else None,  # a swapped symlink is a rotation
        read_auth=read_auth,
        status_ttl_s=status_ttl_s,
        allowed_hosts=allowed_hosts(http.host, http.port,
                                    Settings().api_allowed_hosts if extra_hosts is None else extra_hosts),
    )
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
