"""Real servers on 127.0.0.1 for tests, demos and benchmarks: a site server and two kinds of proxy.

:class:`AuthProxy` is a small HTTP proxy (absolute-URI forwarding and ``CONNECT`` tunnels) that
demands ``Proxy-Authorization: Basic`` and answers 407 otherwise. It only ever connects to loopback:
host names are mapped through ``hosts`` (e.g. ``{"shop.test": ("127.0.0.1", 8123)}``), so a page at
``http://shop.test/`` is reachable *only* through the proxy - which proves the traffic went through it.
It records every request (user, method, host) and can be told to answer with a status (``block``)
to play an exit IP that a site blocks.

:class:`Socks5Proxy` is a SOCKS5 proxy (RFC 1928, ``CONNECT``, no authentication: Chromium has
no SOCKS authentication, so pools reject socks5 proxies with credentials). Chromium sends it host
names, not addresses, so the same ``hosts`` mapping proves the traffic went through it.

:class:`SiteServer` serves a dict of routes (path → (status, content type, body)) from a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Route = tuple[int, str, bytes] | tuple[int, str, bytes, dict[str, str]]
"""(status, content type, body[, more response headers])."""


@dataclass
class ProxyRecord:
    user: str | None
    method: str
    host: str
    path: str
    status: int


class _ProxyServer:
    """An asyncio server on 127.0.0.1, in a thread of its own, that only ever connects to loopback."""

    hosts: dict[str, tuple[str, int]]
    records: list[ProxyRecord]
    port: int

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self):
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-{id(self)}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def _target(self, host: str, port: int) -> tuple[str, int] | None:
        if host in self.hosts:
            return self.hosts[host]
        if host in ("127.0.0.1", "localhost"):
            return ("127.0.0.1", port)
        return None  # never leave loopback

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class AuthProxy(_ProxyServer):
    username: str
    password: str
    hosts: dict[str, tuple[str, int]] = field(default_factory=dict)
    block: int | None = None  # answer every authenticated request with this status
    records: list[ProxyRecord] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def authenticated(self, user: str | None = None) -> list[ProxyRecord]:
        return [r for r in self.records if r.user is not None and (user is None or r.user == user)]

    # -- protocol -------------------------------------------------------------------------------------
    def _check_auth(self, headers: dict[str, str]) -> str | None:
        value = headers.get("proxy-authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, pw = base64.b64decode(value[6:].strip()).decode().partition(":")
        except ValueError:
            return None
        return user if (user, pw) == (self.username, self.password) else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        user = self._check_auth(headers)
        if method == "CONNECT":
            host, _, port_s = target.rpartition(":")
            port, path = int(port_s or 443), ""
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", parts.port or 80
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
        if user is None:
            self.records.append(ProxyRecord(None, method, host, path, 407))
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"fleet\"\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await _close(writer)
            return
        if self.block is not None:
            self.records.append(ProxyRecord(user, method, host, path, self.block))
            body = b"<html><head><title>Blocked</title></head><body>blocked by proxy test</body></html>"
            writer.write(
                f"HTTP/1.1 {self.block} Blocked\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await _close(writer)
            return
        dest = self._target(host, port)
        if dest is None:
            self.records.append(ProxyRecord(user, method, host, path, 502))
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await _close(writer)
            return
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*dest), 10)
        except (OSError, TimeoutError):
            self.records.append(ProxyRecord(user, method, host, path, 502))
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await _close(writer)
            return
        self.records.append(ProxyRecord(user, method, host, path, 200))
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
        else:
            out = [f"{method} {path} HTTP/1.1"]
            for line in lines[1:]:
                if not line or ":" not in line:
                    continue
                k = line.split(":", 1)[0].strip().lower()
                if k in ("proxy-authorization", "proxy-connection", "connection", "keep-alive"):
                    continue
                out.append(line)
            out += ["Via: 1.1 fleet-auth-proxy", "Connection: close", "", ""]
            up_w.write("\r\n".join(out).encode("latin-1"))
            length = int(headers.get("content-length", "0") or 0)
            if length:
                up_w.write(await reader.readexactly(length))
            await up_w.drain()
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))


@dataclass
class Socks5Proxy(_ProxyServer):
    """SOCKS5 ``CONNECT`` without authentication (see the module's docstring); records each
    connection as ``ProxyRecord(None, "CONNECT", host, "", status)`` with 200, 502 or 407."""

    hosts: dict[str, tuple[str, int]] = field(default_factory=dict)
    records: list[ProxyRecord] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ver, n = await asyncio.wait_for(reader.readexactly(2), 30)
            methods = await reader.readexactly(n)
            if ver != 5 or 0 not in methods:  # 0: no authentication
                self.records.append(ProxyRecord(None, "CONNECT", "", "", 407))
                writer.write(b"\x05\xff")
                await _close(writer)
                return
            writer.write(b"\x05\x00")
            ver, cmd, _rsv, atyp = await reader.readexactly(4)
            if atyp == 1:
                host = ".".join(str(b) for b in await reader.readexactly(4))
            elif atyp == 3:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
            elif atyp == 4:
                raw = await reader.readexactly(16)
                host = ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))
            else:
                raise ValueError(f"address type {atyp}")
            port = int.from_bytes(await reader.readexactly(2), "big")
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ValueError, UnicodeError):
            await _close(writer)
            return
        dest = self._target(host, port) if cmd == 1 else None
        up = None
        if dest is not None:
            with contextlib.suppress(OSError, TimeoutError):
                up = await asyncio.wait_for(asyncio.open_connection(*dest), 10)
        if up is None:
            self.records.append(ProxyRecord(None, "CONNECT", host, "", 502))
            # 0x07 command not supported, 0x02 not allowed (off loopback), 0x05 connection refused
            code = 7 if cmd != 1 else (2 if dest is None else 5)
            writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            await _close(writer)
            return
        self.records.append(ProxyRecord(None, "CONNECT", host, "", 200))
        writer.write(bytes([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]))
        await writer.drain()
        await asyncio.gather(_pipe(reader, up[1]), _pipe(up[0], writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


class SiteServer:
    """Serves ``routes`` (or ``handler(path, headers) -> Route | None``) on 127.0.0.1 from a thread."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        handler: Callable[[str, dict[str, str]], Route | None] | None = None,
    ):
        self.routes = dict(routes or {})
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((self.path, hdrs))
                route = outer.routes.get(self.path.split("?", 1)[0])
                if route is None and outer.handler is not None:
                    route = outer.handler(self.path, hdrs)
                status, ctype, body, *more = route or (404, "text/html", b"<title>404</title>not found")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                extra = more[0] if more else {}
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                if not any(name.lower() == "cache-control" for name in extra):
                    self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="site-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SiteServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
