"""The API's front door: a plain ASGI middleware that runs before FastAPI reads anything.

In order, for every HTTP request:

1. **Host check** (DNS rebinding): the ``Host`` header must name the address the API is bound to
   (:attr:`ApiConfig.allowed_hosts`; ``fleet-ray up`` fills in 127.0.0.1, localhost and [::1] with the
   port, the bound host, and ``FLEET_API_ALLOWED_HOSTS``), else **421**;
2. **token first**: a route that needs the token (:func:`access`) is answered **401** before its body
   is read or parsed, so an anonymous client learns nothing from validation errors;
3. **body cap**: a body over :attr:`ApiConfig.max_body_bytes` is answered **413** (by its
   ``Content-Length``, or as soon as the bytes read pass the cap);
4. **live streams**: at most :attr:`ApiConfig.sse_max_streams` event streams at once, and
   :attr:`ApiConfig.sse_max_streams_per_client` per client address, else **429** — the replica's
   concurrent-request budget stays free for status and control calls;
5. **security headers** on every response: a strict Content-Security-Policy (the dashboard loads only
   its own files), no framing, ``nosniff``, no referrer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from .auth import ApiConfig, TokenCheck

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api/v1/"
#: reads answered without a token even when read auth is on (they hold no fleet data)
OPEN_READS = frozenset({"health", "ready"})
#: reads that always need the token: they return configuration, event payloads or error text
TOKEN_READS = frozenset({"spec", "events", "events/stream", "errors"})
STREAM = "events/stream"
READ_METHODS = frozenset({"GET", "HEAD"})

#: the dashboard loads its own script, style sheet and API only; nothing may frame it
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
#: /docs (Swagger UI) loads its assets from a CDN and runs an inline script: only framing is refused
DOCS_CSP = "frame-ancestors 'none'"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def api_path(path: str) -> str | None:
    """The part of ``path`` after ``/api/v1/`` (any route prefix before it), or None if not an API path."""
    at = path.find(API_PREFIX)
    return None if at < 0 else path[at + len(API_PREFIX):].strip("/")


def access(method: str, path: str, read_auth: bool) -> Literal["open", "token"]:
    """Whether a request needs the bearer token.

    Every method but GET/HEAD on the API needs it (control); of the reads, ``health`` and ``ready``
    never do, ``spec``, ``events``, ``events/stream`` and ``errors`` always do, and the rest (status,
    pools, slots, nodes, streams, metrics, breakers) do when read auth is on. The dashboard's files,
    ``/docs`` and ``/openapi.json`` hold no fleet data and are open.
    """
    sub = api_path(path)
    if sub is None:
        return "open"
    if method.upper() not in READ_METHODS:
        return "token"
    if sub in OPEN_READS:
        return "open"
    if sub in TOKEN_READS or read_auth:
        return "token"
    return "open"


def split_host(value: str) -> tuple[str, str | None]:
    """``'name:port'`` / ``'[v6]:port'`` / ``'name'`` → (name, port or None), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1:]
        return value[: end + 1], rest[1:] if rest.startswith(":") and rest[1:] else None
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, port
    return value, None


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    """Whether a ``Host`` header value names this API (see :attr:`ApiConfig.allowed_hosts`)."""
    if "*" in allowed:
        return True
    if not host:
        return False
    name, port = split_host(host)
    for entry in allowed:
        a_name, a_port = split_host(entry)
        if a_name == name and (a_port is None or a_port == port):
            return True
    return False


def unauthorized_message(tokens: TokenCheck, authorization: str | None) -> str | None:
    """None when ``authorization`` carries the token; otherwise why not (never echoing what was sent)."""
    if tokens.check(authorization):
        return None
    if not tokens.configured:
        return ("no API token is configured on the server; set FLEET_API_TOKEN or FLEET_API_TOKEN_FILE "
                "and restart the API")
    if not authorization:
        return ("this endpoint needs 'Authorization: Bearer <token>' (the token in FLEET_API_TOKEN or "
                "FLEET_API_TOKEN_FILE)")
    return "wrong token"


class StreamSlots:
    """Counts the live event streams open now, in total and per client."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self.open: Counter[str] = Counter()

    def acquire(self, client: str) -> str | None:
        """Take a slot for ``client``; None when taken, else why not."""
        if sum(self.open.values()) >= self.total:
            return f"too many live event streams open ({self.total}); try again later"
        if self.open[client] >= self.per_client:
            return f"too many live event streams from this client ({self.per_client}); close one first"
        self.open[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or []:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


async def _error(send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The middleware (see the module docstring). ``tokens`` is the app's own :class:`TokenCheck`."""

    def __init__(self, app: ASGIApp, config: ApiConfig, tokens: TokenCheck):
        self.app, self.config, self.tokens = app, config, tokens
        self.streams = StreamSlots(config.sse_max_streams, config.sse_max_streams_per_client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET").upper()
        csp = (DOCS_CSP if path.rstrip("/").endswith("/docs") else DASHBOARD_CSP).encode()

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in (*SECURITY_HEADERS, (b"content-security-policy", csp))
                         if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = _headers(scope)
        if not host_allowed(headers.get("host"), self.config.allowed_hosts):
            await _error(send_secured, 421, "misdirected",
                         "this API does not answer for that Host; add it to FLEET_API_ALLOWED_HOSTS if it is yours")
            return
        if access(method, path, self.config.read_auth) == "token":
            why = unauthorized_message(self.tokens, headers.get("authorization"))
            if why is not None:
                await _error(send_secured, 401, "unauthorized", why, [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.config.max_body_bytes):
            await _error(send_secured, 413, "too_large", f"request body over {self.config.max_body_bytes} bytes")
            return
        if method not in READ_METHODS:
            receive = await self._buffered(receive)
            if receive is None:
                await _error(send_secured, 413, "too_large", f"request body over {self.config.max_body_bytes} bytes")
                return
        if api_path(path) == STREAM and method in READ_METHODS:
            client = (scope.get("client") or ("?", 0))[0]
            why = self.streams.acquire(client)
            if why is not None:
                await _error(send_secured, 429, "too_many_streams", why, [(b"retry-after", b"5")])
                return
            try:
                await self.app(scope, receive, send_secured)
            finally:
                self.streams.release(client)
            return
        await self.app(scope, receive, send_secured)

    async def _buffered(self, receive: Receive) -> Receive | None:
        """Read the whole body (at most the cap; None beyond) and hand it on as one message."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see that
                first: Message | None = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = None
                break
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return first or {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay
