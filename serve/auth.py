"""The API's configuration and bearer-token check.

The token itself never travels to the Serve replica: the launcher hands over its SHA-256 (and,
optionally, the path of the token file, re-read when it changes), so neither Serve's checkpoint nor
the Ray dashboard ever holds the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiConfig(BaseModel):
    """What one deployment of the API needs to know (no secrets in here)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("fleet", description="Ray namespace of the fleet's supervisor.")
    token_sha256: str | None = Field(None, description="SHA-256 of the control token, hex.")
    token_file: str | None = Field(None, description="File holding the token; re-read when it changes.")
    read_auth: bool = Field(False, description="Read endpoints need the token too.")
    status_ttl_s: float = Field(0.5, ge=0, description="Status responses are cached this long.")
    sse_poll_s: float = Field(0.25, gt=0, description="How often a live event stream asks for new events.")
    sse_keepalive_s: float = Field(15.0, gt=0, description="Comment line sent on an idle event stream.")
    call_timeout_s: float = Field(15.0, gt=0, description="Timeout of one call to the supervisor.")
    # HTTP hardening (fleet_ray.serve.guard): Host allow list, body cap, live-stream limits
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"],
        description="Host header values accepted ('name' any port, 'name:port' that port; '*' any host).")
    max_body_bytes: int = Field(1 << 20, gt=0, description="Largest request body accepted (413 beyond).")
    sse_max_streams: int = Field(32, gt=0, description="Live event streams open at once, in total (429 beyond).")
    sse_max_streams_per_client: int = Field(8, gt=0, description="Live event streams open at once per client.")
    sse_timeout_s: float = Field(900.0, gt=0, description="A live event stream ends after this long at most.")


class TokenCheck:
    def __init__(self, config: ApiConfig):
        self._digest = config.token_sha256
        self._file = Path(config.token_file) if config.token_file else None
        self._file_mtime: float | None = None

    def _current_digest(self) -> str | None:
        if self._file is not None:
            try:
                mtime = os.stat(self._file).st_mtime
                if mtime != self._file_mtime:
                    text = self._file.read_text().strip()
                    self._file_mtime = mtime
                    if text:
                        self._digest = token_digest(text)
            except OSError as exc:
                log.warning("API token file unreadable (%s); keeping the previous token", exc.strerror)
        return self._digest

    @property
    def configured(self) -> bool:
        return self._current_digest() is not None

    def check(self, authorization: str | None) -> bool:
        expected = self._current_digest()
        if expected is None or not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token_digest(token.strip()), expected)
