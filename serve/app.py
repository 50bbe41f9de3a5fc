"""The control-plane FastAPI app: status and control of a fleet over HTTP, plus the web dashboard.

Built by :func:`create_app` (the Serve deployment in :mod:`fleet_ray.serve.deploy` calls it on its
replica). Read endpoints live here; control endpoints in :mod:`fleet_ray.serve.control`. Every error
is JSON of one shape (:class:`fleet_ray.api.models.ErrorResponse`)::

    {"error": {"code": "not_found", "message": "no pool named 'x'", "details": []}}
"""


import logging
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import fleet_ray
from fleet_ray.api.models import (
    ERRORS_EXCLUDE,
    BreakersPage,
    ErrorGroups,
    ErrorResponse,
    EventsPage,
    Health,
    MetricsSeries,
    NodesPage,
    Readiness,
    SpecOut,
    StreamOut,
    StreamsPage,
)
from fleet_ray.api.status import FleetStatus, PoolStatus, SlotStatus
from fleet_ray.api.supervisor import EventQuery
from fleet_ray.errors import (
    FleetError,
    FleetNotRunning,
    SpecError,
    SupervisorRecovering,
    UnknownPool,
    UnknownSlot,
)
from fleet_ray.observe.grouping import FAILURE_KINDS, group_events, newest_first
from fleet_ray.redact import redact_tree

from .auth import ApiConfig, TokenCheck
from .backend import Backend
from .control import add_control_routes
from .events import BadCursor, event_out, follow, format_cursor, parse_cursor
from .guard import Guard, unauthorized_message

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
API = "/api/v1"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    421: {"model": ErrorResponse, "description": "The Host header names no address of this API."},
    404: {"model": ErrorResponse, "description": "No such pool or slot."},
    422: {"model": ErrorResponse, "description": "Invalid request or spec; nothing changed."},
    503: {"model": ErrorResponse, "description": "The fleet supervisor is not reachable."},
}
bearer = HTTPBearer(auto_error=False, description="The fleet's API token (FLEET_API_TOKEN / FLEET_API_TOKEN_FILE).")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None):
        self.status, self.code, self.message, self.details = status, code, message, details or []


def error_response(status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError):
        details = [{"loc": str(e["loc"]), "msg": str(e["msg"])} for e in exc.errors]
        return error_response(422, "invalid_spec", "invalid fleet spec; nothing changed", details)

    @app.exception_handler(FleetError)
    async def _fleet(_: Request, exc: FleetError):
        if isinstance(exc, UnknownPool | UnknownSlot):
            return error_response(404, "not_found", str(exc))
        if isinstance(exc, FleetNotRunning):
            return error_response(503, "unavailable", str(exc))
        if isinstance(exc, SupervisorRecovering):  # nothing changed; the same request may be sent again
            return error_response(503, "recovering", str(exc),
                                  headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        details = [
            {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception):
        log.error("unhandled API error: %s", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the API's log")


def create_app(config: ApiConfig, backend: Backend | None = None) -> FastAPI:
    backend = backend or Backend(config)
    tokens = TokenCheck(config)
    app = FastAPI(
        title="fleet-ray control plane",
        version=fleet_ray.__version__,
        description="Status and control of a fleet-ray fleet. Control endpoints, the spec, events and "
        "errors need `Authorization: Bearer <token>`; the other read endpoints too when the API is started "
        "with read auth. Requests must name the API's own address in `Host` (421 otherwise).",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.backend, app.state.config, app.state.tokens = backend, config, tokens
    _install_error_handlers(app)
    # Host check, token before body, body cap, stream limits, security headers (see .guard); the
    # dependencies below check the token again and put it into the OpenAPI document
    app.add_middleware(Guard, config=config, tokens=tokens)

    def _require(creds: HTTPAuthorizationCredentials | None) -> None:
        why = unauthorized_message(tokens, f"{creds.scheme} {creds.credentials}" if creds else None)
        if why is not None:
            raise ApiError(401, "unauthorized", why)

    def require_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        _require(creds)

    def require_read(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if config.read_auth:
            _require(creds)

    app.state.require_token = require_token
    read = [Depends(require_read)]
    detail = [Depends(require_token)]  # config, event payloads, error text: always behind the token

    # -- health ------------------------------------------------------------------------------------
    @app.get(f"{API}/health", response_model=Health, tags=["health"])
    async def health() -> Health:
        """The API answers (liveness). Says nothing about the fleet."""
        return Health(version=fleet_ray.__version__, namespace=config.namespace)

    @app.get(f"{API}/ready", response_model=Readiness, tags=["health"],
             responses={503: {"model": Readiness, "description": "Not ready; `reason` says why."}})
    async def ready() -> Any:
        """Ready when the supervisor answers and has recovered its state (503 otherwise)."""
        try:
            pid = await backend.ping()
            ok = bool(await backend.is_ready())
        except FleetNotRunning as exc:
            return JSONResponse(Readiness(ready=False, reason=str(exc)).model_dump(), status_code=503)
        body = Readiness(ready=ok, supervisor_pid=pid, reason="" if ok else "supervisor is recovering its state")
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    # -- status ------------------------------------------------------------------------------------
    @app.get(f"{API}/status", response_model=FleetStatus, responses=ERRORS, dependencies=read, tags=["status"])
    async def status(accept_encoding: Annotated[str | None, Header(include_in_schema=False)] = None) -> Any:
        """Pools and slots (state, generation, node, pid, uptime, tasks, recycles, phase) and recent
        events. Cached (``status_ttl_s``, default 0.5 s; while the supervisor is slow, the previous
        snapshot, at most 2 s old, is served while a fresh one is fetched)."""
        snap = await backend.status()
        headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
        if snap.gzipped is not None and accept_encoding and "gzip" in accept_encoding:
            headers["Content-Encoding"] = "gzip"
            return Response(snap.gzipped, media_type="application/json", headers=headers)
        return Response(snap.body, media_type="application/json", headers=headers)

    @app.get(f"{API}/pools/{{pool}}", response_model=PoolStatus, responses=ERRORS, dependencies=read, tags=["status"])
    async def pool(pool: str) -> Any:
        """One pool and its slots."""
        snap = await backend.status()
        found = next((p for p in snap.data["pools"] if p["name"] == pool), None)
        if found is None:
            raise UnknownPool(pool)
        return found

    @app.get(f"{API}/slots/{{slot_id}}", response_model=SlotStatus, responses=ERRORS, dependencies=read,
             tags=["status"])
    async def slot(slot_id: str) -> Any:
        """One slot position (``pool:index``)."""
        snap = await backend.status()
        found = next((s for p in snap.data["pools"] for s in p["slots"] if s["id"] == slot_id), None)
        if found is None:
            raise UnknownSlot(slot_id)
        return found

    @app.get(f"{API}/spec", response_model=SpecOut, responses=ERRORS, dependencies=detail, tags=["status"])
    async def get_spec() -> SpecOut:
        """The desired state. Values under secret-looking keys (password, token, secret, key, ...) and
        URL credentials are masked; ``redacted`` lists where."""
        found: list[str] = []
        spec = redact_tree((await backend.spec()).model_dump(mode="json"), "", found)
        return SpecOut(spec=spec, redacted=found)

    # -- events ------------------------------------------------------------------------------------
    def event_filters(
        kind: Annotated[list[str] | None, Query(description="Event kinds; 'slot.*' matches a prefix.")] = None,
        pool: Annotated[str | None, Query(max_length=200)] = None,
        slot: Annotated[str | None, Query(max_length=200, description="Slot position 'pool:index'.")] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11, description="From this time (epoch s).")] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11, description="Before this time (epoch s).")] = None,
    ) -> dict[str, Any]:
        return {
            "kinds": [k for k in kind or [] if k] or None,
            "pool": pool,
            "slot": slot,
            "since_ms": int(since * 1000) if since is not None else None,
            "until_ms": int(until * 1000) if until is not None else None,
        }

    def cursor_of(text: str | None, where: str):
        if not text:
            return None
        try:
            return parse_cursor(text)
        except BadCursor as exc:
            raise ApiError(422, "invalid_request", str(exc), [{"loc": where, "msg": str(exc)}]) from None

    @app.get(f"{API}/events", response_model=EventsPage, responses=ERRORS, dependencies=detail, tags=["events"])
    async def events(
        filters: Annotated[dict[str, Any], Depends(event_filters)],
        after: Annotated[str | None, Query(max_length=120, description="Only events after this cursor.")] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    ) -> EventsPage:
        """Lifecycle events, oldest first. Without ``since``/``after``: the newest ``limit`` matches from
        the supervisor's memory; with them, the oldest ``limit`` from there on, read from the durable
        event log when needed (page with ``after=<cursor>``)."""
        cur = cursor_of(after, "query.after")
        page = await backend.events(EventQuery(**filters, after=cur, limit=limit))
        out = [event_out(e) for e in page.events]
        return EventsPage(events=out, cursor=out[-1]["cursor"] if out else after, source=page.source)

    @app.get(f"{API}/events/stream", dependencies=detail, tags=["events"],
             responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                                        "description": "Server-Sent Events; each `data:` is an EventOut."},
                        429: {"model": ErrorResponse, "description": "Too many live streams open (in total or "
                              "from this client)."}})
    async def events_stream(
        request: Request,
        filters: Annotated[dict[str, Any], Depends(event_filters)],
        after: Annotated[str | None, Query(max_length=120, description="Start after this cursor.")] = None,
        backlog: Annotated[int, Query(ge=0, le=1000, description="Recent events sent first.")] = 0,
        timeout_s: Annotated[float | None, Query(gt=0, le=86400, description="Close after this long (at most "
                                                  "the server's stream timeout, 900 s by default).")] = None,
        last_event_id: Annotated[str | None, Header(max_length=120)] = None,
    ) -> StreamingResponse:
        """Live events as Server-Sent Events (``id:`` is the event's cursor, so a reconnecting
        EventSource resumes where it left off). A stream ends after ``timeout_s`` or the server's stream
        timeout, whichever is shorter; reconnect with ``Last-Event-ID`` to go on."""
        cur = cursor_of(last_event_id, "header.last-event-id") or cursor_of(after, "query.after")
        if filters["since_ms"] is not None or filters["until_ms"] is not None:
            raise ApiError(422, "invalid_request", "the live stream takes no since/until; use after or backlog",
                           [{"loc": "query.since", "msg": "not supported on the stream"}])
        await backend.ping()  # fail fast (503) if there is no supervisor

        async def fetch(**kw: Any) -> dict[str, Any]:
            try:
                page = await backend.events(EventQuery(**kw))
                return {"events": [e.model_dump(mode="json") for e in page.events], "source": page.source,
                        "newest": list(page.newest) if page.newest else None}
            except FleetNotRunning:  # supervisor restarting: keep the stream open and poll again
                return {"events": [], "source": "memory", "newest": None}

        limit_s = min(timeout_s or config.sse_timeout_s, config.sse_timeout_s)
        gen = follow(fetch, filters, cur, backlog, config.sse_poll_s, config.sse_keepalive_s, limit_s,
                     request.is_disconnected)
        return StreamingResponse(gen, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get(f"{API}/errors", response_model=ErrorGroups, response_model_exclude=ERRORS_EXCLUDE, responses=ERRORS,
             dependencies=detail, tags=["events"])
    async def errors(
        since: Annotated[float | None, Query(ge=0, le=1e11, description="Group failures from this time (epoch s).")] = None,
        pool: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ErrorGroups:
        """Failures grouped, plus the slots failing right now: slot failures (died, start failed, unhealthy,
        heal escalated, config rejected) by kind and message signature (numbers and ids masked) and,
        where the supervisor groups task failures itself, those by exception type and first user frame.
        Without ``since``: the supervisor's recent events; with it, the event log."""
        page = await backend.events(EventQuery(kinds=list(FAILURE_KINDS), pool=pool,
                                               since_ms=int(since * 1000) if since is not None else None, limit=5000))
        groups = newest_first(group_events(page.events), await backend.error_groups(pool, since))
        source = ("supervisor lifecycle events: " + ", ".join(FAILURE_KINDS)
                  + "; task and automation failures grouped by the supervisor (error_groups)")
        snap = await backend.status()
        failing = [
            {"slot": s["id"], "state": s["state"], "reason": s["reason"]}
            for p in snap.data["pools"] if pool is None or p["name"] == pool
            for s in p["slots"] if s["state"] == "failed" or s["backoff_s"] > 0 or s["reason"].startswith("unhealthy")
        ]
        return ErrorGroups(groups=groups, failing_slots=failing, source=source)

    # -- the rest of the fleet ---------------------------------------------------------------------
    @app.get(f"{API}/streams", response_model=StreamsPage, responses=ERRORS, dependencies=read, tags=["status"])
    async def streams() -> StreamsPage:
        """Typed output streams: depth, capacity, in/out rates, items emitted (empty if the fleet has none)."""
        known = set(StreamOut.model_fields)
        return StreamsPage(streams=[StreamOut(**s.model_dump(include=known)) for s in await backend.streams()])

    @app.get(f"{API}/nodes", response_model=NodesPage, responses=ERRORS, dependencies=read, tags=["status"])
    async def nodes() -> NodesPage:
        """Ray nodes with their tags (custom resources, labels) and the slots on each."""
        return NodesPage(nodes=await backend.nodes())

    @app.get(f"{API}/metrics/series", response_model=MetricsSeries, responses=ERRORS, dependencies=read,
             tags=["status"])
    async def metrics_series() -> MetricsSeries:
        """Per-pool throughput, failure rate and running slots over the last minutes (1 sample/s)."""
        return await backend.metrics_series()

    @app.get(f"{API}/breakers", response_model=BreakersPage, responses=ERRORS, dependencies=read, tags=["status"])
    async def breakers() -> BreakersPage:
        """Campaign reputation circuit breakers (per target host) of the fleet's namespace."""
        return BreakersPage(breakers=await backend.breakers())


    add_control_routes(app, backend, require_token, ERRORS)

    # -- dashboard ---------------------------------------------------------------------------------
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Any:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Any:
        if name not in files:
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return FileResponse(files[name], headers={"Cache-Control": "no-cache"})

    app.state.format_cursor = format_cursor
    return app
