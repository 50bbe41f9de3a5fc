"""Error notifications: one message per new error group, a digest for repeats, storms folded.

- :class:`Notifier` is the interface (``send(notification)``); :class:`WebhookNotifier` (JSON POST)
  and :class:`TelegramNotifier` (Bot API ``sendMessage``, configurable ``base_url``) are built in.
- :class:`NotificationGate` decides *what* to send (pure, clock passed in): a new group waits
  ``window_s`` so alike failures arriving together (10 slots failing alike) land in its one
  message; groups that kept failing go out as one digest every ``digest_s``; more than
  ``storm_groups`` new groups at once become one storm message; at most ``max_per_minute``
  messages leave, the rest wait for the digest.
- :class:`Reporter` is fire-and-forget: ``report()`` only updates the gate under a lock, a daemon
  thread does the HTTP; nothing it does raises into the fleet or blocks it, and failures are
  logged without the notifier's token (a notifier is named by its host only,
  :func:`fleet_ray.redact.host_only`).

Configure from the environment (:func:`config_from_env`: ``FLEET_NOTIFY_WEBHOOK_URL``,
``FLEET_NOTIFY_TELEGRAM_TOKEN``, ``FLEET_NOTIFY_TELEGRAM_CHAT_ID``, ``FLEET_NOTIFY_TELEGRAM_BASE_URL``,
``FLEET_NOTIFY_WINDOW_S``, ``FLEET_NOTIFY_DIGEST_S``) or at run time (``Supervisor.configure_notifiers``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fleet_ray.errors import NotifyError
from fleet_ray.observe.grouping import ErrorGroup
from fleet_ray.redact import host_only

log = logging.getLogger(__name__)


class Notification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["new", "digest", "storm"]
    title: str
    text: str
    groups: list[dict[str, Any]] = Field(default_factory=list, description="The ErrorGroups it is about.")


class Notifier(Protocol):
    name: str

    def send(self, notification: Notification) -> None:
        """Deliver or raise :class:`NotifyError` (the reporter catches it)."""


def _post(url: str, payload: dict[str, Any], timeout_s: float, shown: str) -> None:
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            resp = client.post(url, json=payload)
    except httpx.HTTPError as exc:  # the message may hold the URL (and a token in it): don't keep it
        raise NotifyError(f"{shown}: {type(exc).__name__}") from None
    if resp.status_code >= 300:
        raise NotifyError(f"{shown}: HTTP {resp.status_code}")


class WebhookNotifier:
    """POSTs each notification as JSON (``Notification`` fields) to ``url``."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self._url = url
        self.timeout_s = timeout_s
        self.name = f"webhook {host_only(url)}"

    def send(self, notification: Notification) -> None:
        _post(self._url, notification.model_dump(mode="json"), self.timeout_s, self.name)


class TelegramNotifier:
    """Sends ``title + text`` through the Telegram Bot API (``{base_url}/bot<token>/sendMessage``)."""

    def __init__(self, token: str | SecretStr, chat_id: str, base_url: str = "https://api.telegram.org",
                 timeout_s: float = 5.0):
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self.chat_id = str(chat_id)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.name = f"telegram {host_only(self.base_url)} chat {self.chat_id}"

    def send(self, notification: Notification) -> None:
        url = f"{self.base_url}/bot{self._token.get_secret_value()}/sendMessage"
        text = f"{notification.title}\n{notification.text}"[:4096]
        _post(url, {"chat_id": self.chat_id, "text": text, "disable_web_page_preview": True},
              self.timeout_s, self.name)


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: SecretStr | None = Field(None, description="POST JSON notifications here (kept secret: such URLs often embed a token).")
    telegram_token: SecretStr | None = Field(None, description="Bot token (never shown or logged).")
    telegram_chat_id: str | None = None
    telegram_base_url: str = "https://api.telegram.org"
    window_s: float = Field(2.0, ge=0, description="A new group waits this long to gather alike failures.")
    digest_s: float = Field(300.0, gt=0, description="Period of the digest of groups that kept failing.")
    max_per_minute: int = Field(6, ge=1, description="Messages per minute at most; the rest join the digest.")
    storm_groups: int = Field(3, ge=1, description="More new groups than this at once → one storm message.")

    def summary(self) -> dict[str, Any]:
        """What is configured, without secrets (webhook shown as scheme://host only)."""
        return {
            "webhook": host_only(self.webhook_url.get_secret_value()) if self.webhook_url else None,
            "telegram": host_only(self.telegram_base_url) if self.telegram_token and self.telegram_chat_id else None,
            "window_s": self.window_s,
            "digest_s": self.digest_s,
            "max_per_minute": self.max_per_minute,
        }


def config_from_env(environ: Mapping[str, str] = os.environ) -> NotifyConfig:
    e = {k[len("FLEET_NOTIFY_"):].lower(): v for k, v in environ.items() if k.startswith("FLEET_NOTIFY_")}
    return NotifyConfig.model_validate({k: v for k, v in e.items() if k in NotifyConfig.model_fields})


def build_notifiers(config: NotifyConfig) -> list[Notifier]:
    out: list[Notifier] = []
    if config.webhook_url:
        out.append(WebhookNotifier(config.webhook_url.get_secret_value()))
    if config.telegram_token and config.telegram_chat_id:
        out.append(TelegramNotifier(config.telegram_token, config.telegram_chat_id, config.telegram_base_url))
    return out


# -- deciding what to send ----------------------------------------------------------------------------
def _ts(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe(g: ErrorGroup, extra: int | None = None) -> str:
    slots = ", ".join(g.slots[:10]) + (f" (+{len(g.slots) - 10})" if len(g.slots) > 10 else "")
    lines = [
        f"{g.error_type} @ {g.frame}",
        f"{g.count} failure(s){f' (+{extra} since last message)' if extra else ''} · pools: {', '.join(g.pools) or '-'}",
        f"slots: {slots or '-'} · phases: {', '.join(g.phases) or '-'}",
        f"first {_ts(g.first_seen)}, last {_ts(g.last_seen)}",
    ]
    if g.sample:
        lines.append(f"latest: {g.sample}")
    return "\n".join(lines)


class NotificationGate:
    def __init__(self, config: NotifyConfig, fleet: str = "fleet"):
        self.config = config
        self.fleet = fleet
        self._groups: dict[str, ErrorGroup] = {}
        self._seen_at: dict[str, float] = {}
        self._notified_count: dict[str, int] = {}  # key → group count when last messaged
        self._last_digest: float | None = None
        self._sent_at: deque[float] = deque()
        self.suppressed = 0

    def observe(self, group: ErrorGroup, now: float) -> None:
        self._groups[group.key] = group.model_copy(deep=True)
        self._seen_at.setdefault(group.key, now)
        if self._last_digest is None:
            self._last_digest = now

    def seed(self, group: ErrorGroup, now: float) -> None:
        """A group known from before (e.g. rebuilt from the event log after a restart): as notified."""
        self._groups[group.key] = group.model_copy(deep=True)
        self._seen_at.setdefault(group.key, now)
        self._notified_count[group.key] = group.count
        if self._last_digest is None:
            self._last_digest = now

    def _budget(self, now: float) -> int:
        while self._sent_at and now - self._sent_at[0] >= 60:
            self._sent_at.popleft()
        return self.config.max_per_minute - len(self._sent_at)

    def due(self, now: float, force_digest: bool = False) -> list[Notification]:
        out: list[Notification] = []
        fresh = [g for k, g in self._groups.items()
                 if k not in self._notified_count and now - self._seen_at[k] >= self.config.window_s]
        if len(fresh) > self.config.storm_groups and self._budget(now) > 0:
            fresh.sort(key=lambda g: g.count, reverse=True)
            text = "\n\n".join(describe(g) for g in fresh[:10])
            more = f"\n\n(+{len(fresh) - 10} more groups)" if len(fresh) > 10 else ""
            out.append(Notification(kind="storm", title=f"[{self.fleet}] error storm: {len(fresh)} new error groups",
                                    text=text + more, groups=[g.model_dump(mode="json") for g in fresh]))
            self._mark(fresh, now)
        else:
            for g in fresh:
                if self._budget(now) <= 0:
                    break  # rate-limited: it waits (it is still fresh next time)
                out.append(Notification(kind="new", title=f"[{self.fleet}] new error: {g.error_type}",
                                        text=describe(g), groups=[g.model_dump(mode="json")]))
                self._mark([g], now)
        if self._last_digest is not None and (force_digest or now - self._last_digest >= self.config.digest_s):
            self._last_digest = now
            repeats = [(g, g.count - self._notified_count[k]) for k, g in self._groups.items()
                       if k in self._notified_count and g.count > self._notified_count[k]]
            if repeats:
                repeats.sort(key=lambda x: x[1], reverse=True)
                text = "\n\n".join(describe(g, extra) for g, extra in repeats[:20])
                out.append(Notification(kind="digest", title=f"[{self.fleet}] {len(repeats)} error group(s) kept failing",
                                        text=text, groups=[g.model_dump(mode="json") for g, _ in repeats]))
                self._mark([g for g, _ in repeats], now)
        return out

    def _mark(self, groups: list[ErrorGroup], now: float) -> None:
        self._sent_at.append(now)
        for g in groups:
            self._notified_count[g.key] = g.count


class Reporter:
    """Fire-and-forget delivery of the gate's notifications on a daemon thread."""

    def __init__(self, config: NotifyConfig | None = None, notifiers: list[Notifier] | None = None,
                 fleet: str = "fleet", clock: Callable[[], float] = time.time, tick_s: float = 0.25,
                 start: bool = True):
        self.config = config or NotifyConfig()
        self.notifiers = notifiers if notifiers is not None else build_notifiers(self.config)
        self.gate = NotificationGate(self.config, fleet)
        self.clock = clock
        self.tick_s = tick_s
        self.sent: deque[Notification] = deque(maxlen=100)
        self.failures = 0
        self._lock = threading.Lock()
        self._outbox: deque[Notification] = deque(maxlen=100)
        self._stop = threading.Event()
        self._force_digest = False
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="fleet-notify", daemon=True)
            self._thread.start()

    def report(self, group: ErrorGroup) -> None:
        """Note a group's latest state. Never raises, never blocks on I/O."""
        try:
            with self._lock:
                self.gate.observe(group, self.clock())
        except Exception:  # pragma: no cover - a bug here must not reach the fleet
            log.exception("notify: report failed")

    def seed(self, group: ErrorGroup) -> None:
        with self._lock:
            self.gate.seed(group, self.clock())

    def digest_now(self) -> None:
        """Send the digest at the next tick instead of waiting for ``digest_s``."""
        self._force_digest = True

    def tick(self) -> list[Notification]:
        """Move due notifications to the outbox and deliver them (the thread calls this)."""
        with self._lock:
            force, self._force_digest = self._force_digest, False
            due = self.gate.due(self.clock(), force_digest=force)
            self._outbox.extend(due)
        while self._outbox:
            n = self._outbox.popleft()
            self._deliver(n)
        return due

    def _deliver(self, n: Notification) -> None:
        for notifier in self.notifiers:
            for attempt in (1, 2):
                try:
                    notifier.send(n)
                    break
                except Exception as exc:  # never into the fleet; the text never holds a token
                    msg = str(exc) if isinstance(exc, NotifyError) else type(exc).__name__
                    if attempt == 2:
                        self.failures += 1
                        log.warning("notify via %s failed: %s", notifier.name, msg)
                    else:
                        self._stop.wait(0.5)
        self.sent.append(n)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # pragma: no cover
                log.exception("notify: tick failed; continuing")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
