"""Identities over time: rotated per task, or kept as sessions (cookies and storage persisted).

``mode: rotate`` draws a fresh identity (and proxy) for every task. ``mode: session`` keeps up to
``max_sessions`` identities, each with a sticky proxy and its browser state carried from task to task
(the runtime keeps its live context, or carries its cookies and local storage), runs up to
``tasks_per_session`` of its tasks at once (tabs of one profile), and retires a session after
``max_uses`` tasks, after ``max_age_s``, or on a block signal — a session that must retire while some
of its tasks still run takes no new ones and retires when the last one ends. With ``persist_dir`` sessions survive slot restarts; their files
(cookies) are 0600 in a 0700 directory, written atomically, never through a symlink.

Pure bookkeeping: clock and randomness are injected; Playwright is not imported here.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_ray.errors import ProxyError
from fleet_ray.private_files import private_dir, read_nofollow, write_private
from fleet_ray.spec.browser_options import SessionPolicy

from .identity import Identity, IdentityFactory
from .proxies import ProxyHealth, ProxyPool, ProxyState

log = logging.getLogger(__name__)


@dataclass
class Session:
    id: str
    identity: Identity
    proxy_id: str | None
    created_at: float
    storage_state: dict[str, Any] | None = None
    uses: int = 0
    active: int = 0  # tasks running in it now
    draining: str | None = None  # must retire once its running tasks end (takes no new ones)
    kept: bool = False  # a kept session outlives its task (session mode)
    retired: str | None = None
    last_used: float = field(default=0.0)

    @property
    def busy(self) -> bool:
        return self.active > 0


class SessionManager:
    def __init__(
        self,
        policy: SessionPolicy,
        factory: IdentityFactory,
        proxies: ProxyPool,
        clock: Callable[[], float] = time.time,
        persist_dir: Path | None = None,
    ):
        self.policy = policy
        self.factory = factory
        self.proxies = proxies
        self.clock = clock
        self.persist_dir = persist_dir
        self.sessions: dict[str, Session] = {}
        self.retired = 0
        if persist_dir is not None and policy.mode == "session":
            self._load()

    # -- checkout / checkin ----------------------------------------------------------------------
    def checkout(self, avoid_proxies: Iterable[str] = ()) -> Session:
        avoid = set(avoid_proxies)
        if self.policy.mode == "session":
            self._expire()
            room = [
                s
                for s in self.sessions.values()
                if s.active < self.policy.tasks_per_session and s.retired is None and s.draining is None
                and self._proxy_ok(s.proxy_id) and s.proxy_id not in avoid
            ]
            if room:
                # the fullest session with room, then the least recently used: tasks share a live
                # context rather than open another (each context costs its own renderers and cache)
                s = min(room, key=lambda x: (-x.active, x.last_used))
                s.active += 1
                return s
        proxy = self._acquire_proxy(None, avoid)
        keep = self.policy.mode == "session" and self._live() < self.policy.max_sessions
        s = self._new(proxy, keep)
        s.active += 1
        return s

    def checkin(self, session: Session, ok: bool, storage_state: dict[str, Any] | None = None) -> None:
        session.active = max(0, session.active - 1)
        session.uses += 1
        session.last_used = self.clock()
        if storage_state is not None and session.kept:
            session.storage_state = storage_state
        if not session.kept:
            return
        reason = session.draining or self._expired(session)
        if reason and session.active > 0:
            session.draining = reason  # its other tasks finish first
        elif reason:
            self.retire(session, reason, leaving=False)
        else:
            self._save(session)

    def retire(self, session: Session, reason: str, leaving: bool = True) -> None:
        """Drop a session for good (blocked, logged out, too old, too used). ``leaving`` (the default):
        the caller holds it and is done with it; ``False``: a session the caller does not hold. One
        that other tasks still use stops taking new ones and goes when they end (:meth:`checkin`)."""
        if leaving:
            session.active = max(0, session.active - 1)
        if session.active > 0 and session.retired is None:
            session.draining = reason
            return
        if session.retired is None:
            session.retired = reason
            self.retired += 1
        self.sessions.pop(session.id, None)
        if self.persist_dir is not None:
            (self.persist_dir / f"{session.id}.json").unlink(missing_ok=True)

    def rotate_proxy(self, session: Session, failed: str | None) -> Session:
        """Give the session another proxy; a different country means a different identity."""
        avoid = {failed} if failed else set()
        old_country = self.proxies.get(session.proxy_id).spec.country if session.proxy_id else None
        proxy = self._acquire_proxy(old_country, avoid)
        new_country = proxy.spec.country if proxy else None
        if (new_country == old_country or new_country is None) and session.active <= 1:
            session.proxy_id = proxy.id if proxy else None
            return session
        # another country means another identity; a session other tasks share keeps its proxy for them
        self.retire(session, "proxy changed country" if new_country != old_country else "proxy failed", leaving=True)
        s = self._new(proxy, session.kept)
        s.active += 1
        return s

    def fresh(self, session: Session, reason: str, avoid_proxies: Iterable[str] = ()) -> Session:
        """Retire ``session`` and start a new identity (and proxy) in its place."""
        kept = session.kept
        self.retire(session, reason, leaving=True)
        proxy = self._acquire_proxy(None, set(avoid_proxies))
        s = self._new(proxy, kept)
        s.active += 1
        return s

    def snapshot(self) -> dict[str, Any]:
        return {"mode": self.policy.mode, "live": self._live(), "retired": self.retired}

    # -- internals ---------------------------------------------------------------------------------
    def _live(self) -> int:
        """Sessions that take tasks (a draining one goes once its tasks end: it leaves room already)."""
        return sum(1 for s in self.sessions.values() if s.retired is None and s.draining is None)

    def _acquire_proxy(self, country: str | None, avoid: set[str]) -> ProxyState | None:
        if not self.proxies:
            return None
        proxy = self.proxies.acquire(country, avoid)
        if proxy is None:
            raise ProxyError("no healthy proxy: every proxy of the pool is cooling down or quarantined")
        return proxy

    def _proxy_ok(self, proxy_id: str | None) -> bool:
        if proxy_id is None:
            return not self.proxies
        return self.proxies.get(proxy_id).health(self.proxies.clock()) is ProxyHealth.HEALTHY

    def _new(self, proxy: ProxyState | None, keep: bool) -> Session:
        identity = self.factory.generate(proxy.spec.country if proxy else None)
        s = Session(
            id=uuid.uuid4().hex[:12],
            identity=identity,
            proxy_id=proxy.id if proxy else None,
            created_at=self.clock(),
            kept=keep,
        )
        if keep:
            self.sessions[s.id] = s
        return s

    def _expired(self, s: Session) -> str | None:
        if self.policy.max_uses is not None and s.uses >= self.policy.max_uses:
            return f"used {s.uses} times"
        if self.policy.max_age_s is not None and self.clock() - s.created_at >= self.policy.max_age_s:
            return "too old"
        return None

    def _expire(self) -> None:
        for s in list(self.sessions.values()):
            reason = None if s.busy else self._expired(s)
            if reason:
                self.retire(s, reason, leaving=False)

    def _save(self, s: Session) -> None:
        if self.persist_dir is None:
            return
        data = {
            "id": s.id,
            "identity": s.identity.model_dump(mode="json"),
            "proxy": self.proxies.get(s.proxy_id).spec.display if s.proxy_id else None,
            "created_at": s.created_at,
            "uses": s.uses,
            "storage_state": s.storage_state,
        }
        # cookies and storage: a private directory, a 0600 file written atomically, no symlink followed
        write_private(self._private_dir() / f"{s.id}.json", json.dumps(data))

    def _private_dir(self) -> Path:
        """``persist_dir``, 0700 and checked (:func:`~fleet_ray.private_files.private_dir`); missing
        levels above it are created with the default mode (they hold no secrets)."""
        assert self.persist_dir is not None
        return private_dir(self.persist_dir)

    def _load(self) -> None:
        by_display = {p.display: pid for pid, p in self.proxies.states.items()}
        if not self.persist_dir.exists():
            return
        try:
            folder = self._private_dir()  # never read sessions another user could have planted
        except OSError as exc:
            log.warning("saved sessions not loaded: %s", exc)
            return
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(read_nofollow(path))
                identity = Identity.model_validate(data["identity"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable session file %s: %s", path.name, exc)
                continue
            proxy_id = by_display.get(data.get("proxy")) if data.get("proxy") else None
            if data.get("proxy") and proxy_id is None:
                path.unlink(missing_ok=True)  # its proxy is gone from the pool
                continue
            s = Session(
                id=data["id"],
                identity=identity,
                proxy_id=proxy_id,
                created_at=float(data["created_at"]),
                storage_state=data.get("storage_state"),
                uses=int(data.get("uses", 0)),
                kept=True,
            )
            if self._expired(s) or len(self.sessions) >= self.policy.max_sessions:
                path.unlink(missing_ok=True)
                continue
            self.sessions[s.id] = s
