"""An HTTP client for the control-plane API (what the CLI uses when an API is running).

::

    from fleet_ray.client.http import ApiClient
    api = ApiClient("http://127.0.0.1:8470", token=resolve_token())
    print(api.status().pools)
    api.scale("web", 4)
    for event in api.follow_events(kind=["slot.*"]):
        print(event["kind"], event["slot"])

Errors come back as the library's own: an invalid spec raises :class:`~fleet_ray.errors.SpecError`
naming the fields, an unreachable API or supervisor :class:`~fleet_ray.errors.FleetNotRunning`, an
unknown pool or slot :class:`~fleet_ray.errors.UnknownPool` / :class:`~fleet_ray.errors.UnknownSlot`, a
supervisor that has not recovered yet :class:`~fleet_ray.errors.SupervisorRecovering` (``retry_after_s``),
and anything else :class:`ApiRequestError` (with the API's stable ``code``).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from fleet_ray.api.status import FleetStatus, PoolStatus, SlotStatus
from fleet_ray.errors import (
    FleetError,
    FleetNotRunning,
    SpecError,
    SupervisorRecovering,
    UnknownPool,
    UnknownSlot,
)
from fleet_ray.settings import DEFAULT_HOME, Settings

DEFAULT_TOKEN_FILE = DEFAULT_HOME / "api-token"
API = "/api/v1"


class ApiRequestError(FleetError):
    """The API refused a request; ``status`` is the HTTP status, ``code`` the API's error code."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        self.status, self.code, self.message, self.details = status, code, message, details or []
        super().__init__(f"{message} (HTTP {status} {code})")

    def __reduce__(self):
        return (type(self), (self.status, self.code, self.message, self.details))


def resolve_token(explicit: str | None = None, settings: Settings | None = None) -> str | None:
    """The API token: ``explicit``, else FLEET_API_TOKEN / FLEET_API_TOKEN_FILE, else the file
    ``fleet-ray up`` writes (~/.fleet-ray/api-token)."""
    if explicit:
        return explicit
    token = (settings or Settings()).token()
    if token:
        return token
    if DEFAULT_TOKEN_FILE.exists():
        return DEFAULT_TOKEN_FILE.read_text().strip() or None
    return None


def ensure_token_file(path: Path = DEFAULT_TOKEN_FILE) -> Path:
    """Create a random token in ``path`` (mode 0600) unless it exists; returns the path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path


def default_api_url(namespace: str = "fleet", settings: Settings | None = None) -> str:
    """Where ``fleet-ray up`` serves a fleet's API: ``/`` for namespace ``fleet``, ``/<namespace>`` else."""
    settings = settings or Settings()
    return f"http://{settings.api_host}:{settings.api_port}" + ("" if namespace == "fleet" else f"/{namespace}")


def probe(url: str, namespace: str | None = None, timeout_s: float = 0.5) -> bool:
    """True if a fleet-ray API answers at ``url`` (for ``namespace``, when given)."""
    try:
        r = httpx.get(f"{url.rstrip('/')}{API}/health", timeout=timeout_s)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return False
    return r.status_code == 200 and body.get("status") == "ok" and (namespace is None or body.get("namespace") == namespace)


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------------
    def _raise(self, r: httpx.Response) -> None:
        try:
            err = r.json()["error"]
            code, message, details = err["code"], err["message"], err.get("details", [])
        except (ValueError, KeyError, TypeError):
            code, message, details = "internal", r.text[:200] or r.reason_phrase, []
        if code == "invalid_spec":
            raise SpecError(details or [{"loc": "spec", "msg": message}])
        if code == "unavailable":
            raise FleetNotRunning(message)
        if code == "recovering":
            try:
                retry = float(r.headers.get("Retry-After", "1"))
            except ValueError:
                retry = 1.0
            raise SupervisorRecovering(message, retry)
        if code == "not_found" and message.startswith("no pool named '"):
            raise UnknownPool(message.split("'")[1])
        if code == "not_found" and message.startswith("no slot '"):
            raise UnknownSlot(message.split("'")[1])
        raise ApiRequestError(r.status_code, code, message, details)

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, f"{API}{path}", **kw)
        except httpx.TransportError as exc:
            raise FleetNotRunning(f"no fleet API at {self.url} ({type(exc).__name__})") from None
        if r.status_code >= 400:
            self._raise(r)
        return r.json()

    # -- reads -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def ready(self) -> bool:
        try:
            return bool(self._request("GET", "/ready").get("ready"))
        except (FleetNotRunning, ApiRequestError):
            return False

    def status(self) -> FleetStatus:
        return FleetStatus.model_validate(self._request("GET", "/status"))

    def pool(self, name: str) -> PoolStatus:
        return PoolStatus.model_validate(self._request("GET", f"/pools/{name}"))

    def slot(self, slot_id: str) -> SlotStatus:
        return SlotStatus.model_validate(self._request("GET", f"/slots/{slot_id}"))

    def events(self, **filters: Any) -> dict[str, Any]:
        """``kind`` (list), ``pool``, ``slot``, ``since``/``until`` (epoch s), ``after``, ``limit``."""
        return self._request("GET", "/events", params={k: v for k, v in filters.items() if v is not None})

    def follow_events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Yield events live from the Server-Sent Events stream (``backlog=N`` sends recent ones first).

        Without ``timeout_s`` this follows for good: when the server ends a stream (it caps how long
        one lasts), it reconnects after the last event it got (``Last-Event-ID``)."""
        params = {k: v for k, v in filters.items() if v is not None}
        last: str | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._http.stream("GET", f"{API}/events/stream", params=params, headers=headers,
                                       timeout=None) as r:
                    if r.status_code >= 400:
                        r.read()
                        self._raise(r)
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            event = json.loads(line[5:].strip())
                            last = event.get("cursor") or last
                            yield event
            except httpx.TransportError as exc:
                raise FleetNotRunning(f"event stream from {self.url} ended ({type(exc).__name__})") from None
            if "timeout_s" in params:
                return
            params.pop("backlog", None)  # a resumed stream sends only what is new

    def errors(self, **params: Any) -> dict[str, Any]:
        return self._request("GET", "/errors", params={k: v for k, v in params.items() if v is not None})

    def streams(self) -> list[dict[str, Any]]:
        return self._request("GET", "/streams")["streams"]

    def nodes(self) -> list[dict[str, Any]]:
        return self._request("GET", "/nodes")["nodes"]

    def spec(self) -> dict[str, Any]:
        return self._request("GET", "/spec")

    # -- control ---------------------------------------------------------------------------------
    def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/spec", json=spec)

    def scale(self, pool: str, slots: int) -> dict[str, Any]:
        return self._request("POST", f"/pools/{pool}/scale", json={"slots": slots})

    def recycle(self, slot_id: str) -> dict[str, Any]:
        return self._request("POST", f"/slots/{slot_id}/recycle")

    def drain(self, pool: str) -> dict[str, Any]:
        return self._request("POST", f"/pools/{pool}/drain")

    def pause(self, pool: str) -> dict[str, Any]:
        return self._request("POST", f"/pools/{pool}/pause")

    def resume(self, pool: str, slots: int | None = None) -> dict[str, Any]:
        return self._request("POST", f"/pools/{pool}/resume", json={"slots": slots} if slots is not None else None)
