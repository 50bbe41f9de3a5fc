"""Per-pool options of browser slots (``kind: browser``), as pure Pydantic models.

They are validated with the rest of the spec, on any node, without Playwright installed::

    pools:
      - name: shop
        kind: browser
        automation: acme.prices
        placement: {resources: {browser: 1}}
        browser:
          block_resources: [image, font, media]
          pages_per_browser: 200
          proxies:
            - {url: "http://10.0.0.5:3128", username: alice, password: s3cret, country: DE}
          sessions: {mode: session, max_uses: 50}

Proxy passwords are :class:`~pydantic.SecretStr`: they print as ``**********`` in reprs, logs, errors
and status. A JSON dump (``model_dump(mode="json")``) carries the real value, because that is how the
spec travels to the supervisor, its checkpoint and the slots; user-facing output goes through
:meth:`ProxySpec.display` or the HTTP API's redaction. A credential written into a proxy URL
(``http://user:pw@host``) is moved into the username/password fields.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from fleet_ray.names import DEFAULT_CHROMIUM
from fleet_ray.redact import masked_userinfo

ResourceType = Literal["image", "font", "media", "stylesheet", "other"]
OsName = Literal["windows", "macos", "linux"]

# country → (locale, extra languages, IANA timezone, latitude, longitude): where the browser claims to be
# when its proxy declares that country. One representative city per country.
COUNTRIES: dict[str, tuple[str, tuple[str, ...], str, float, float]] = {
    "US": ("en-US", ("en",), "America/New_York", 40.7128, -74.0060),
    "CA": ("en-CA", ("en", "fr-CA"), "America/Toronto", 43.6532, -79.3832),
    "MX": ("es-MX", ("es", "en"), "America/Mexico_City", 19.4326, -99.1332),
    "BR": ("pt-BR", ("pt", "en"), "America/Sao_Paulo", -23.5505, -46.6333),
    "AR": ("es-AR", ("es", "en"), "America/Argentina/Buenos_Aires", -34.6037, -58.3816),
    "GB": ("en-GB", ("en",), "Europe/London", 51.5074, -0.1278),
    "IE": ("en-IE", ("en",), "Europe/Dublin", 53.3498, -6.2603),
    "DE": ("de-DE", ("de", "en-US", "en"), "Europe/Berlin", 52.5200, 13.4050),
    "AT": ("de-AT", ("de", "en"), "Europe/Vienna", 48.2082, 16.3738),
    "CH": ("de-CH", ("de", "fr", "en"), "Europe/Zurich", 47.3769, 8.5417),
    "FR": ("fr-FR", ("fr", "en-US", "en"), "Europe/Paris", 48.8566, 2.3522),
    "BE": ("nl-BE", ("nl", "fr", "en"), "Europe/Brussels", 50.8503, 4.3517),
    "NL": ("nl-NL", ("nl", "en-US", "en"), "Europe/Amsterdam", 52.3676, 4.9041),
    "ES": ("es-ES", ("es", "en"), "Europe/Madrid", 40.4168, -3.7038),
    "PT": ("pt-PT", ("pt", "en"), "Europe/Lisbon", 38.7223, -9.1393),
    "IT": ("it-IT", ("it", "en-US", "en"), "Europe/Rome", 41.9028, 12.4964),
    "PL": ("pl-PL", ("pl", "en-US", "en"), "Europe/Warsaw", 52.2297, 21.0122),
    "CZ": ("cs-CZ", ("cs", "en"), "Europe/Prague", 50.0755, 14.4378),
    "SE": ("sv-SE", ("sv", "en-US", "en"), "Europe/Stockholm", 59.3293, 18.0686),
    "NO": ("nb-NO", ("nb", "no", "en"), "Europe/Oslo", 59.9139, 10.7522),
    "DK": ("da-DK", ("da", "en"), "Europe/Copenhagen", 55.6761, 12.5683),
    "FI": ("fi-FI", ("fi", "en"), "Europe/Helsinki", 60.1699, 24.9384),
    "RO": ("ro-RO", ("ro", "en"), "Europe/Bucharest", 44.4268, 26.1025),
    "GR": ("el-GR", ("el", "en"), "Europe/Athens", 37.9838, 23.7275),
    "TR": ("tr-TR", ("tr", "en"), "Europe/Istanbul", 41.0082, 28.9784),
    "UA": ("uk-UA", ("uk", "en"), "Europe/Kyiv", 50.4501, 30.5234),
    "IL": ("he-IL", ("he", "en"), "Asia/Jerusalem", 31.7683, 35.2137),
    "AE": ("ar-AE", ("ar", "en"), "Asia/Dubai", 25.2048, 55.2708),
    "IN": ("en-IN", ("en", "hi"), "Asia/Kolkata", 19.0760, 72.8777),
    "SG": ("en-SG", ("en", "zh-SG"), "Asia/Singapore", 1.3521, 103.8198),
    "JP": ("ja-JP", ("ja", "en"), "Asia/Tokyo", 35.6762, 139.6503),
    "KR": ("ko-KR", ("ko", "en"), "Asia/Seoul", 37.5665, 126.9780),
    "TW": ("zh-TW", ("zh", "en"), "Asia/Taipei", 25.0330, 121.5654),
    "HK": ("zh-HK", ("zh", "en"), "Asia/Hong_Kong", 22.3193, 114.1694),
    "ID": ("id-ID", ("id", "en"), "Asia/Jakarta", -6.2088, 106.8456),
    "TH": ("th-TH", ("th", "en"), "Asia/Bangkok", 13.7563, 100.5018),
    "VN": ("vi-VN", ("vi", "en"), "Asia/Ho_Chi_Minh", 10.8231, 106.6297),
    "AU": ("en-AU", ("en",), "Australia/Sydney", -33.8688, 151.2093),
    "NZ": ("en-NZ", ("en",), "Pacific/Auckland", -36.8485, 174.7633),
    "ZA": ("en-ZA", ("en", "af"), "Africa/Johannesburg", -26.2041, 28.0473),
}

# args the slot sets itself: a pool may not override them
_RESERVED_ARGS = ("--user-data-dir", "--remote-debugging", "--proxy-server", "--proxy-bypass-list", "--headless")

DEFAULT_CHALLENGE_SELECTORS = [
    "iframe[src*='recaptcha']",
    "iframe[src*='hcaptcha']",
    "iframe[src*='challenges.cloudflare.com']",
    ".g-recaptcha",
    ".h-captcha",
    ".cf-turnstile",
    "#challenge-form",
    "#challenge-running",
    "#px-captcha",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _country(v: str | None) -> str | None:
    if v is None:
        return v
    code = v.strip().upper()
    if code not in COUNTRIES:
        raise ValueError(f"unknown country {v!r}; known: {', '.join(sorted(COUNTRIES))}")
    return code


class ProxySpec(_Strict):
    """One upstream proxy. Credentials go in ``username``/``password`` (never into logs)."""

    url: str = Field(description="http://host:port, https://host:port or socks5://host:port")
    username: str | None = Field(None, description="Proxy user (redacted in logs and status).")
    password: SecretStr | None = Field(None, description="Proxy password (secret; never shown).")
    country: str | None = Field(None, description="ISO 3166 alpha-2 country the proxy exits in.")
    label: str | None = Field(None, description="Display name; defaults to scheme://host:port.")

    @model_validator(mode="before")
    @classmethod
    def _split_credentials(cls, data):
        if isinstance(data, str):
            data = {"url": data}
        if isinstance(data, dict) and isinstance(data.get("url"), str) and "@" in data["url"]:
            parts = urlsplit(data["url"])
            if parts.username is not None:
                data = dict(data)
                data.setdefault("username", unquote(parts.username))
                if parts.password is not None:
                    data.setdefault("password", unquote(parts.password))
                host = parts.hostname or ""
                data["url"] = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https", "socks5"):
            raise ValueError("proxy url must start with http://, https:// or socks5://")
        if not parts.hostname:
            raise ValueError("proxy url needs a host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("proxy url has an invalid port") from None
        if port is None:
            raise ValueError("proxy url needs a port, e.g. http://10.0.0.5:3128")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("proxy url must be scheme://host:port only")
        return f"{parts.scheme}://{parts.hostname}:{port}"

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str | None) -> str | None:
        return _country(v)

    @model_validator(mode="after")
    def _user_with_password(self) -> ProxySpec:
        if self.password is not None and self.username is None:
            raise ValueError("a proxy password needs a username")
        if self.url.startswith("socks5://") and self.username is not None:
            raise ValueError(
                "Chromium does not support authenticated SOCKS5 proxies: use an http(s) proxy for "
                "username/password, or a socks5 proxy without credentials"
            )
        return self

    @field_serializer("password", when_used="json")
    def _carry_secret(self, v: SecretStr | None) -> str | None:
        # JSON dumps carry the spec to the supervisor, its checkpoint and the slots, which need the
        # password; everything user-facing (repr, logs, events, errors, status, the HTTP API's
        # redact_tree) shows it masked.
        return v.get_secret_value() if v is not None else None

    @property
    def display(self) -> str:
        """What logs, events, errors and status show: never the credentials."""
        if self.label:
            return self.label
        return self.url if self.username is None else masked_userinfo(self.url)

    def playwright(self) -> dict[str, str]:
        """The proxy setting for a Playwright context, with the real password (do not log)."""
        out = {"server": self.url, "bypass": "<-loopback>"}
        if self.username is not None:
            out["username"] = self.username
            out["password"] = self.password.get_secret_value() if self.password else ""
        return out


class ProxyPolicy(_Strict):
    """Per-proxy health: consecutive failures → cooldown; repeated cooldowns → quarantine."""

    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that put a proxy in cooldown.")
    cooldown_s: float = Field(60.0, ge=0, description="How long a proxy in cooldown is skipped.")
    quarantine_after: int = Field(3, ge=1, description="Cooldowns within quarantine_window_s before quarantine.")
    quarantine_window_s: float = Field(900.0, gt=0)
    quarantine_s: float = Field(3600.0, gt=0, description="How long a quarantined proxy is skipped.")
    block_statuses: list[int] = Field(
        default_factory=lambda: [403, 429], description="Main-document HTTP statuses that mean 'blocked'."
    )
    challenge_selectors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CHALLENGE_SELECTORS),
        description="CSS selectors of captcha/challenge widgets; a page showing one counts as blocked.",
    )

    @field_validator("block_statuses")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        for s in v:
            if not 100 <= s <= 599:
                raise ValueError(f"{s} is not an HTTP status")
        return v


class SessionPolicy(_Strict):
    """Keep identities across tasks (a live context, or cookies and storage carried), or rotate one per task."""

    mode: Literal["rotate", "session"] = Field("rotate", description="rotate: a new identity per task.")
    max_sessions: int = Field(8, ge=1, description="Sessions a slot keeps at once (session mode).")
    max_uses: int | None = Field(50, ge=1, description="Tasks after which a session retires.")
    max_age_s: float | None = Field(3600.0, gt=0, description="Age after which a session retires.")
    tasks_per_session: int = Field(
        1, ge=1, le=64, description="Session mode: tasks of one session that may run at once, as tabs of its "
        "context (the slot opens another session only when every live one is full)."
    )
    reuse_pages: bool = Field(
        True, description="With keep_context: a finished task's tab is reused by the session's next task (no "
        "new renderer per task). The slot removes its own listeners; an automation that adds page listeners, "
        "routes or init scripts to its page should remove them, or set this false.",
    )
    keep_context: bool = Field(
        True, description="Session mode: a session keeps one live browser context (cookies, storage and HTTP "
        "cache) for all its tasks, until it retires or Chromium recycles; false: a fresh context per task, with "
        "the session's cookies and local storage carried over (no HTTP cache, no session storage).",
    )
    persist_dir: str | None = Field(
        None, description="Directory where sessions (identity, cookies, storage) survive slot restarts."
    )


class IdentityOptions(_Strict):
    enabled: bool = Field(True, description="False: Chromium's own defaults (no fingerprint, no stealth).")
    os: list[OsName] = Field(
        default_factory=lambda: ["windows", "macos", "linux"], min_length=1, description="OSes to claim."
    )
    brand: Literal["Google Chrome", "Chromium"] = Field("Google Chrome", description="Browser brand to claim.")
    country: str = Field("US", description="Country (timezone, locale, geolocation) when the proxy has none.")
    seed: int | None = Field(None, description="Seed for reproducible identities (tests).")

    @field_validator("country")
    @classmethod
    def _known_country(cls, v: str) -> str:
        return _country(v) or "US"


class ArtifactOptions(_Strict):
    on_failure: bool = Field(True, description="Save screenshot, trace and console log when a task fails.")
    logs_root: str = Field(
        "logs", description="Root of <YYYY-MM-DD>/<pool>/<slot>/; a relative path is relative to the slot "
        "process's working directory, so set an absolute one in production."
    )
    screenshot: bool = True
    trace: Literal["retry", "always", "off"] = Field(
        "retry",
        description="Record a Playwright trace (kept only on failure): 'retry' records retried attempts, and "
        "every attempt when max_attempts is 1, so a task that fails after retries leaves the trace of its "
        "last attempt (a first attempt that fails for good leaves screenshot and console only); 'always' "
        "every attempt (costly: DOM snapshots on every page); 'off' never. true/false mean always/off.",
    )
    console: bool = True
    max_console_lines: int = Field(500, ge=1)

    @field_validator("trace", mode="before")
    @classmethod
    def _trace_bool(cls, v: object) -> object:
        return {True: "always", False: "off"}.get(v, v) if isinstance(v, bool) else v


class BrowserOptions(_Strict):
    """How a browser slot runs Chromium. Every field has a safe default."""

    executable_path: str = Field(DEFAULT_CHROMIUM, description="Chromium binary (never downloaded).")
    headless: bool = True
    extra_args: list[str] = Field(default_factory=list, description="More Chromium switches.")
    block_resources: list[ResourceType] = Field(
        default_factory=list, description="Resource types aborted before they load, e.g. [image, font, media]."
    )
    pages_per_browser: int = Field(200, ge=1, description="Recycle Chromium after this many tasks.")
    max_browser_rss_mb: float | None = Field(
        1500.0, gt=0, description="Recycle Chromium once its process tree uses more memory than this, MiB "
        "(pages shared between Chromium's processes count once)."
    )
    launch_timeout_s: float = Field(90.0, gt=0, description="How long Chromium may take to start.")
    navigation_timeout_s: float = Field(30.0, gt=0, description="Default timeout of page navigations.")
    task_timeout_s: float = Field(120.0, gt=0, description="A task running longer is a hang: its context is closed.")
    close_timeout_s: float = Field(5.0, gt=0, description="A context that won't close in time → browser recycled.")
    watchdog_interval_s: float = Field(2.0, gt=0, description="How often the watchdog pings Chromium.")
    ping_timeout_s: float = Field(10.0, gt=0, description="Chromium not answering this long is hung → killed.")
    max_attempts: int = Field(3, ge=1, description="Attempts per item across recoveries (rotate, recycle...).")
    cpu_pinning: Literal["auto", "off"] = Field(
        "auto", description="auto: the browser slots on a host split its CPUs and each slot's processes "
        "(worker, driver, Chromium) run only on its share, re-balanced as slots come and go; off: anywhere."
    )
    identity: IdentityOptions = Field(default_factory=IdentityOptions)
    sessions: SessionPolicy = Field(default_factory=SessionPolicy)
    proxies: list[ProxySpec] = Field(default_factory=list)
    proxy_policy: ProxyPolicy = Field(default_factory=ProxyPolicy)
    artifacts: ArtifactOptions = Field(default_factory=ArtifactOptions)

    @field_validator("executable_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("executable_path must be an absolute path, e.g. /usr/bin/chromium")
        return v

    @field_validator("extra_args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        for arg in v:
            if not re.match(r"^--[a-zA-Z0-9]", arg):
                raise ValueError(f"{arg!r} is not a Chromium switch (--name or --name=value)")
            if arg.startswith(_RESERVED_ARGS):
                raise ValueError(f"{arg.split('=')[0]} is set by the browser slot; use the pool's options instead")
        return v

    @model_validator(mode="after")
    def _unique_proxies(self) -> BrowserOptions:
        seen: set[tuple[str, str | None]] = set()
        for p in self.proxies:
            key = (p.url, p.username)
            if key in seen:
                raise ValueError(f"proxy {p.display} is listed twice")
            seen.add(key)
        return self
