"""The campaign's proxy pool: round-robin with per-proxy health (pure, clock injected).

:class:`MemberProxyPool` gives each member a sticky proxy from the campaign's list; it is not the
browser slots' :class:`fleet_ray.browser.proxies.ProxyPool` (least-used, by country, with quarantine),
and its :class:`MemberProxyHealth` rows are not that module's ``ProxyHealth`` states.

A proxy that fails ``max_failures`` times in a row cools down for ``cooldown_s``; a reputation hit
(HTTP 429/403 or a captcha) counts as a failure and a demerit, and moves the member that saw it to
the next healthy proxy. Members with a pinned proxy in their identity keep it. Credentials never
leave this module unredacted except to the member that connects through the proxy.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from fleet_ray.redact import redact_url

REPUTATION_STATUSES = frozenset({403, 429})
REPUTATION_CODES = frozenset({"HTTP_429", "HTTP_403", "CAPTCHA_DETECTED"})


def proxy_id(url: str) -> str:
    """A stable, secret-free name for a proxy (its redacted URL plus a short digest)."""
    return f"{redact_url(url)}#{hashlib.sha256(url.encode()).hexdigest()[:6]}"


def is_reputation_hit(status: int | None, code: str | None = None, text: str = "") -> bool:
    return (
        (status in REPUTATION_STATUSES)
        or (code in REPUTATION_CODES)
        or ("captcha" in text.lower())
    )


class MemberProxyHealth(BaseModel):
    """One proxy of the pool as ``Campaign.status()`` shows it (its id is secret-free)."""

    model_config = ConfigDict(extra="forbid")

    proxy_id: str
    healthy: bool
    consecutive_failures: int
    reputation_demerits: int
    uses: int
    last_used_at: float | None
    cooling_until: float | None


class _Proxy:
    def __init__(self, url: str):
        self.url = url
        self.id = proxy_id(url)
        self.failures = 0
        self.demerits = 0
        self.uses = 0
        self.last_used: float | None = None
        self.cooling_until: float | None = None


class MemberProxyPool:
    """The campaign's proxies, one sticky proxy per member until it turns unhealthy or is hit."""

    def __init__(self, urls: list[str], max_failures: int = 3, cooldown_s: float = 30.0,
                 clock: Callable[[], float] | None = None):
        self._proxies = [_Proxy(u) for u in urls]
        self._by_id = {p.id: p for p in self._proxies}
        self._max_failures = max_failures
        self._cooldown = cooldown_s
        self._clock = clock or time.time
        self._next = 0
        self._assigned: dict[int, str] = {}  # member → proxy id
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._proxies)

    def _healthy(self, p: _Proxy, now: float) -> bool:
        if p.cooling_until is not None and now >= p.cooling_until:
            p.cooling_until = None
            p.failures = 0
        return p.cooling_until is None

    def for_member(self, member: int) -> str | None:
        """The proxy URL this member should use now (sticky until it turns unhealthy)."""
        if not self._proxies:
            return None
        with self._lock:
            now = self._clock()
            current = self._by_id.get(self._assigned.get(member, ""))
            if current is None or not self._healthy(current, now):
                current = self._pick(now)
                self._assigned[member] = current.id
            current.uses += 1
            current.last_used = now
            return current.url

    def _pick(self, now: float) -> _Proxy:
        n = len(self._proxies)
        for i in range(n):
            p = self._proxies[(self._next + i) % n]
            if self._healthy(p, now):
                self._next = (self._next + i + 1) % n
                return p
        # all cooling: the one whose cooldown ends first
        p = min(self._proxies, key=lambda q: q.cooling_until or 0.0)
        return p

    def report(self, url: str, ok: bool, reputation_hit: bool = False, member: int | None = None) -> None:
        """Feed back one request's outcome through ``url``."""
        with self._lock:
            p = self._by_id.get(proxy_id(url))
            if p is None:
                return
            if ok and not reputation_hit:
                p.failures = 0
                return
            p.failures += 1
            if reputation_hit:
                p.demerits += 1
                if member is not None and self._assigned.get(member) == p.id:
                    del self._assigned[member]  # rotate this member on its next operation
            if p.failures >= self._max_failures and p.cooling_until is None:
                p.cooling_until = self._clock() + self._cooldown

    def health(self) -> list[MemberProxyHealth]:
        with self._lock:
            now = self._clock()
            return [
                MemberProxyHealth(
                    proxy_id=p.id,
                    healthy=self._healthy(p, now),
                    consecutive_failures=p.failures,
                    reputation_demerits=p.demerits,
                    uses=p.uses,
                    last_used_at=p.last_used,
                    cooling_until=p.cooling_until,
                )
                for p in self._proxies
            ]
