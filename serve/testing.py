"""Helpers for tests and benchmarks that run the API for real (loopback only)."""

from __future__ import annotations

import socket
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 90.0) -> dict:
    """Poll ``GET /api/v1/ready`` until the API and its supervisor are ready; returns the body."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/api/v1/ready", timeout=5)
            if r.status_code == 200 and r.json().get("ready"):
                return r.json()
            last = r.text
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"API at {url} not ready within {timeout_s}s (last: {last!r})")
