"""A proxy pool with per-proxy health (pure logic; the clock and randomness are injected).

- A success resets a proxy's consecutive-failure count.
- ``failure_threshold`` consecutive failures (connection errors, reputation hits such as HTTP
  403/429 or a captcha page) put the proxy in **cooldown** for ``cooldown_s``.
- ``quarantine_after`` cooldowns within ``quarantine_window_s`` → **quarantine** for ``quarantine_s``.
- Rejected credentials quarantine the proxy at once: retrying the same password won't help.
- :meth:`ProxyPool.acquire` hands out the least-used healthy proxy (optionally of a country,
  optionally avoiding some), skipping cooling and quarantined ones.

Nothing here ever shows a password: :attr:`ProxyState.display` is the redacted name, and
:meth:`ProxyPool.snapshot` is safe to put into health reports and events.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleet_ray.spec.browser_options import ProxyPolicy, ProxySpec


class ProxyHealth(StrEnum):
    HEALTHY = "healthy"
    COOLDOWN = "cooldown"
    QUARANTINED = "quarantined"


class Outcome(StrEnum):
    OK = "ok"
    CONNECT_FAILED = "connect_failed"
    AUTH_FAILED = "auth_failed"
    REPUTATION = "reputation"  # blocked: 403/429/captcha


@dataclass
class ProxyState:
    id: str
    spec: ProxySpec
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    quarantined_until: float = 0.0
    cooldowns: deque[float] = field(default_factory=deque)
    uses: int = 0
    successes: int = 0
    failures: int = 0
    last_outcome: str | None = None

    @property
    def display(self) -> str:
        return self.spec.display

    def health(self, now: float) -> ProxyHealth:
        if now < self.quarantined_until:
            return ProxyHealth.QUARANTINED
        if now < self.cooldown_until:
            return ProxyHealth.COOLDOWN
        return ProxyHealth.HEALTHY


class ProxyPool:
    def __init__(
        self,
        specs: Iterable[ProxySpec],
        policy: ProxyPolicy,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.states = {f"p{i}": ProxyState(f"p{i}", s) for i, s in enumerate(specs)}

    def __len__(self) -> int:
        return len(self.states)

    def __bool__(self) -> bool:
        return bool(self.states)

    def get(self, proxy_id: str) -> ProxyState:
        return self.states[proxy_id]

    def acquire(self, country: str | None = None, avoid: Iterable[str] = ()) -> ProxyState | None:
        """The least-used healthy proxy (ties broken at random); None if none is healthy.

        ``country`` prefers proxies exiting there (others only when none of that country is healthy);
        ``avoid`` skips proxies (e.g. the one that just failed) unless nothing else is healthy.
        """
        now = self.clock()
        healthy = [s for s in self.states.values() if s.health(now) is ProxyHealth.HEALTHY]
        if not healthy:
            return None
        avoid = set(avoid)
        for candidates in (
            [s for s in healthy if s.id not in avoid and (country is None or s.spec.country == country)],
            [s for s in healthy if s.id not in avoid],
            healthy,
        ):
            if candidates:
                least = min(s.uses for s in candidates)
                pick = self.rng.choice([s for s in candidates if s.uses == least])
                pick.uses += 1
                return pick
        return None

    def report(self, proxy_id: str, outcome: Outcome) -> ProxyHealth:
        """Record how a task went through this proxy; returns the proxy's health afterwards."""
        s = self.states[proxy_id]
        now = self.clock()
        s.last_outcome = outcome.value
        if outcome is Outcome.OK:
            s.successes += 1
            s.consecutive_failures = 0
            return s.health(now)
        s.failures += 1
        s.consecutive_failures += 1
        if outcome is Outcome.AUTH_FAILED:
            s.quarantined_until = now + self.policy.quarantine_s
            s.consecutive_failures = 0
            return s.health(now)
        if s.consecutive_failures >= self.policy.failure_threshold:
            s.consecutive_failures = 0
            s.cooldown_until = now + self.policy.cooldown_s
            s.cooldowns.append(now)
            while s.cooldowns and s.cooldowns[0] < now - self.policy.quarantine_window_s:
                s.cooldowns.popleft()
            if len(s.cooldowns) >= self.policy.quarantine_after:
                s.quarantined_until = now + self.policy.quarantine_s
                s.cooldowns.clear()
        return s.health(now)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-proxy health for status and events (credentials redacted)."""
        now = self.clock()
        return [
            {
                "id": s.id,
                "proxy": s.display,
                "country": s.spec.country,
                "health": s.health(now).value,
                "uses": s.uses,
                "successes": s.successes,
                "failures": s.failures,
                "last_outcome": s.last_outcome,
            }
            for s in self.states.values()
        ]
