"""Campaign configuration: members' identities, guardrails, audit, placement. Validated up front.

A member's identity is a :class:`MemberIdentity` (the HTTP client it presents: UA, locale, cookies,
proxy), not the browser fingerprint of :class:`fleet_ray.browser.identity.Identity`; where workers run
is a :class:`CampaignPlacement`, not a pool's :class:`fleet_ray.spec.models.Placement`.

Everything here is a Pydantic model with ``extra="forbid"``; :func:`validate_config` turns every
problem into one :class:`~fleet_ray.errors.CampaignConfigError` naming the fields, before anything starts.
Guardrails are on by default and the rate limit can't be configured below 1 request/s per target.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleet_ray.errors import CampaignConfigError
from fleet_ray.redact import redact_url
from fleet_ray.store.guardrails import DEFAULT_WINDOW

MIN_RATE = 1.0  # the safety rail: a target's limit can't be configured below this many requests/s
DEFAULT_RATE = 2.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def target_host(target: str) -> str:
    """The host a target names (``https://Example.com:8443/x`` → ``example.com``; a bare host stays)."""
    t = target.strip()
    parts = urlsplit(t if "://" in t else f"//{t}")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"target {t!r} names no host")
    return host


class MemberIdentity(BaseModel):
    """One member's identity: everything that makes its requests look like an independent client."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Stable name for receipts and status (default: member-<index>)")
    user_agent: str = Field("Mozilla/5.0 (X11; Linux x86_64) fleet-ray", description="User-Agent header")
    viewport: tuple[int, int] = Field((1366, 768), description="Browser viewport (width, height)")
    locale: str = Field("en-US", description="Accept-Language / browser locale")
    timezone: str = Field("UTC", description="IANA timezone for browser contexts")
    proxy: str | None = Field(None, description="Pinned proxy URL (may hold credentials; never shown)")
    cookies: dict[str, str] = Field(default_factory=dict, description="Initial cookies of the member's own jar")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers")

    @field_validator("viewport")
    @classmethod
    def _viewport(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 100 or v[1] < 100:
            raise ValueError("viewport must be at least 100x100")
        return v

    def public(self) -> dict[str, Any]:
        """A view safe for status and receipts (the proxy's credentials redacted, no cookie values)."""
        return {
            "id": self.id,
            "user_agent": self.user_agent,
            "locale": self.locale,
            "timezone": self.timezone,
            "viewport": list(self.viewport),
            "proxy": redact_url(self.proxy) if self.proxy else None,
        }


class RateLimitConfig(BaseModel):
    """Per-target token bucket, shared by every member on every node (state lives in the store)."""

    model_config = ConfigDict(extra="forbid")

    per_target_rps: float = Field(DEFAULT_RATE, ge=MIN_RATE, description="Requests/s per target host (>= 1)")
    per_host: dict[str, float] = Field(default_factory=dict, description="Overrides by host (each >= 1 req/s)")
    burst: int = Field(1, ge=1, le=100, description="Bucket capacity (1: never more than the rate in any 1 s)")
    jitter_margin: float = Field(
        0.05, ge=0.0, le=0.2,
        description="Slots are spaced (1 + margin)/rate so client-side jitter can't push the rate seen "
        "at the target over the configured one",
    )
    max_wait_s: float = Field(300.0, gt=0, description="Longer waits for a slot fail with RateLimited")

    @field_validator("per_host")
    @classmethod
    def _floor(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for host, rate in v.items():
            if rate < MIN_RATE:
                raise ValueError(f"{host}: {rate} req/s is below the {MIN_RATE:g} req/s safety floor")
            out[target_host(host)] = float(rate)
        return out

    def rate_for(self, host: str) -> float:
        return self.per_host.get(host, self.per_target_rps)


class BreakerConfig(BaseModel):
    """Reputation circuit breaker per target: trips on > failure_rate over window_s with min_samples."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    failure_rate: float = Field(DEFAULT_WINDOW.failure_rate, gt=0, lt=1,
                                description="Trip when failures/samples exceeds this")
    window_s: float = Field(DEFAULT_WINDOW.window_s, ge=1, le=3600, description="Sliding window length")
    min_samples: int = Field(DEFAULT_WINDOW.min_samples, ge=1,
                             description="No trip with fewer samples in the window")
    bucket_s: float = Field(DEFAULT_WINDOW.bucket_s, gt=0, le=60, description="Window resolution")
    failure_statuses: list[int] = Field(
        default_factory=lambda: [403, 408, 429, 500, 502, 503, 504],
        description="HTTP statuses that count as failures (transport errors always do)",
    )


class AuditConfig(BaseModel):
    """Signed receipts: Ed25519 key from ``key_env`` or ``key_file`` (never logged); optional NDJSON sink."""

    model_config = ConfigDict(extra="forbid")

    signing: bool = Field(True, description="Sign and chain receipts (off: receipts unsigned, no sink)")
    key_env: str = Field("FLEET_AUDIT_KEY", description="Env var holding the private key (PEM, base64 or hex)")
    key_file: Path | None = Field(None, description="File holding the private key (PEM or raw/base64/hex seed)")
    sink: Path | None = Field(None, description="NDJSON file that receives every receipt, in chain order")
    inline_value_bytes: int = Field(4096, ge=0, description="Results up to this size are kept in receipts")


class CampaignPlacement(BaseModel):
    """Where member workers run: one or more per eligible node, spread round-robin."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(None, ge=1, le=256, description="Worker actors (default: one per eligible node)")
    resources: dict[str, float] = Field(default_factory=dict, description="Only nodes with these resources")
    labels: dict[str, str] = Field(default_factory=dict, description="Only nodes with these labels")
    include_head: bool = Field(True, description="May workers run on the head node")
    threads_per_worker: int | None = Field(None, ge=1, le=512, description="Default: ceil(active/workers)+1, at most 128")


class CampaignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(description="Names the campaign in receipts, the store and resume")
    members: list[MemberIdentity] = Field(min_length=1, description="One identity per member")
    active_concurrency: int = Field(50, ge=1, le=100_000, description="Member operations in flight at once")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    placement: CampaignPlacement = Field(default_factory=CampaignPlacement)
    proxies: list[str] = Field(default_factory=list, description="Proxy pool rotated for members without one")
    proxy_max_failures: int = Field(3, ge=1, description="Consecutive failures before a proxy cools down")
    proxy_cooldown_s: float = Field(30.0, ge=0)
    request_timeout_s: float = Field(30.0, gt=0)
    cancel_grace_s: float = Field(10.0, ge=0, description="How long a won race waits for siblings to stop")
    lease_ttl_s: float = Field(15.0, ge=1, description="Driver lease; a SIGKILLed driver's lapses after this")
    lease_wait_s: float = Field(0.0, ge=0, description="Wait this long for another driver's lease to lapse")
    resume: bool = Field(False, description="Continue an earlier run of this campaign id from the durable log")

    @field_validator("campaign_id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError("use 1-128 characters from [A-Za-z0-9_.:-], starting with a letter or digit")
        return v

    @field_validator("proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if "://" not in p:  # without a scheme it can't be redacted reliably: don't echo it
                raise ValueError(f"proxy #{i} must be a URL like http://[user:password@]host:port")
        return v


def validate_config(data: CampaignConfig | dict[str, Any]) -> CampaignConfig:
    """Validate a campaign config; every problem is reported at once, naming the field."""
    if isinstance(data, CampaignConfig):
        data = data.model_dump()
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "config", "msg": _safe_msg(e)}
            for e in exc.errors(include_url=False)
        ]
        raise CampaignConfigError(errors) from None


def _safe_msg(err: dict[str, Any]) -> str:
    # pydantic's message may echo the input; proxies and keys can hold secrets, so keep the message only
    return redact_url(str(err.get("msg", "invalid")))
