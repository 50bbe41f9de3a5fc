"""The API's configuration and bearer-token check.

The token itself never travels to the Serve replica: the launcher hands over its SHA-256 (and,
optionally, the path of the token file, read on every check: deleting or emptying it revokes the
token, fail closed), so neither Serve's checkpoint nor the Ray dashboard ever holds the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
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
    token_file: str | None = Field(None, description="File holding the token; read on every check, "
                                      "the one source of truth (missing or empty: every control call is refused).")
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


#: the most of a token file that is read (a token is a line; anything longer is not a token file)
TOKEN_FILE_LIMIT = 4096


def read_token_file(path: Path) -> str | None:
    """The token in ``path`` (first line, stripped), or None when the file is missing, empty,
    unreadable or not a regular file (the caller fails closed). A symlink is followed: secret
    mounts (Kubernetes) rotate by swapping one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, TOKEN_FILE_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[0].strip() or None if lines else None


class TokenCheck:
    """The bearer-token check, failing closed.

    With a token file, the file is the one source of truth and is read on every check (a few
    microseconds: it is one short line), so a rotation is seen at once even when it keeps the file's
    mtime, and deleting or emptying the file revokes the token: control endpoints then refuse every
    request until a token is written again. Without a file, the digest handed over at start is the
    token. Comparison is constant-time (of SHA-256 digests, so the length leaks nothing either).
    """

    def __init__(self, config: ApiConfig):
        self._digest = config.token_sha256
        self._file = Path(config.token_file) if config.token_file else None
        self._file_state: str | None = None  # what was logged last about the file ("ok", "missing")

    def _current_digest(self) -> str | None:
        if self._file is None:
            return self._digest
        token = read_token_file(self._file)
        state = "ok" if token else "missing"
        if state != self._file_state:
            if token is None:
                log.warning("API token file %s is missing, empty or unreadable: control endpoints refuse "
                            "every request until a token is written there", self._file)
            elif self._file_state is not None:
                log.info("API token file %s holds a token again", self._file)
            self._file_state = state
        return token_digest(token) if token else None

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
