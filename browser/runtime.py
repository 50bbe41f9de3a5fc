"""Running one browser task: identity + proxy → fresh context → ``visit(page, item)`` → recovery.

:class:`BrowserRuntime` is what a browser slot owns (and what tests drive directly, without Ray).
For each item it checks out a session (identity and proxy) and gets that session's browser context:
in ``mode: session`` with ``keep_context`` (the default) the session's **live context** — cookies,
storage and HTTP cache kept across its tasks, as a real profile keeps them — else a **fresh context**
with the identity's fingerprint and proxy. It opens a page, runs the automation's ``visit(page, item)``
under the task timeout, checks the result for block signals (HTTP 403/429, captcha/challenge widgets,
407 from the proxy), and closes the page; a fresh context is always closed, a kept one when its
session retires, its proxy changes, a task in it fails or Chromium recycles (its cookies and storage
are read first, so the session's next context starts with them). Every scope of a page — workers,
frames, popups — gets the identity before it runs (:mod:`fleet_ray.browser.scopes`). A failure is translated into a typed error
(:mod:`fleet_ray.errors`, ``BrowserError`` tree) whose ``recovery`` decides the next attempt: retry
with the same identity, rotate the proxy, rotate the identity, recycle the browser, or fail the
item. On failure the slot's artifacts (screenshot, trace, console log) are written first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_ray.automation import PhaseTimeout
from fleet_ray.errors import (
    AutomationError,
    BlockedError,
    BrowserCrashed,
    BrowserError,
    BrowserHung,
    NavigationError,
    ProxyAuthError,
    ProxyError,
    Recovery,
)
from fleet_ray.redact import redact_url
from fleet_ray.spec.browser_options import BrowserOptions

from .artifacts import ArtifactWriter, ConsoleLog
from .host import BrowserHost
from .identity import Identity, IdentityFactory
from .proxies import Outcome, ProxyPool
from .reaper import ProcessTag
from .scopes import ScopeOverrides, browser_context_id, prepare_page
from .sessions import Session, SessionManager

log = logging.getLogger(__name__)

Visit = Callable[[Any, Any], Awaitable[Any]]

PROXY_AUTH_CODES = ("ERR_PROXY_AUTH", "ERR_INVALID_AUTH_CREDENTIALS", "ERR_TUNNEL_CONNECTION_FAILED")
PROXY_CODES = ("ERR_PROXY_", "ERR_SOCKS_", "ERR_NO_SUPPORTED_PROXIES", "ERR_MANDATORY_PROXY")
CHECK_JS = """sels => {
  const nav = performance.getEntriesByType('navigation')[0];
  return [nav ? nav.responseStatus || null : null, sels.find(s => document.querySelector(s)) || null];
}"""
CLOSED_MARKERS = ("has been closed", "Target closed", "Connection closed", "Browser closed", "browser has disconnected")


@dataclass
class TaskInfo:
    """The task in flight (``BrowserAutomation.task``): which identity, proxy, attempt and phase."""

    name: str
    attempt: int
    identity: Identity | None
    proxy: str | None
    session_id: str
    phase: str | None = None
    last_status: int | None = None
    statuses: list[int] = field(default_factory=list)


@dataclass
class LiveContext:
    """A browser context and what it was made for: one session's identity and proxy, on one Chromium."""

    context: Any
    browser: Any
    session_id: str
    proxy_id: str | None
    overrides: ScopeOverrides | None
    kept: bool
    cdp_context_id: str | None = None
    tasks: int = 0
    active: int = 0  # tasks running in it now
    retiring: bool = False  # takes no new tasks; closed when the last one ends
    idle_pages: list[Any] = field(default_factory=list)  # tabs a finished task left for the next


CURRENT_TASK: contextvars.ContextVar[TaskInfo | None] = contextvars.ContextVar("fleet_browser_task", default=None)
TASK_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("fleet_browser_task_name", default="task")


def failed_phase(exc: BaseException) -> str | None:
    """The phase a failure happened in: PhaseTimeout's own, or the one ``ctx.phase`` tagged."""
    if isinstance(exc, PhaseTimeout):
        return exc.phase
    return getattr(exc, "fleet_phase", None) or getattr(exc, "phase", None)


def recovery_for(exc: BaseException) -> Recovery:
    """The recovery policy of an error: typed browser errors carry it; a phase timeout retries once
    more with the same identity; anything else (a bug in the automation) fails the item."""
    if isinstance(exc, BrowserError):
        return exc.recovery
    if isinstance(exc, PhaseTimeout):
        return Recovery.RETRY_SAME
    return Recovery.FAIL


def classify(exc: BaseException, *, phase: str | None, proxy: str | None, browser_alive: bool,
             last_status: int | None, task_timeout: bool) -> BaseException:
    """Translate what a task raised into a typed error (third-party exceptions become BrowserErrors)."""
    if isinstance(exc, BrowserError):
        if exc.phase is None:
            exc.phase = phase
        return exc
    if isinstance(exc, PhaseTimeout):
        return exc
    if task_timeout:
        return BrowserHung("the task ran past task_timeout_s (a stalled page or renderer)", phase)
    if last_status == 407:
        return ProxyAuthError(f"proxy {proxy} rejected the credentials (HTTP 407)", phase, proxy)
    try:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout
    except ImportError:  # pragma: no cover - the browser extra is installed wherever this runs
        return exc
    if not isinstance(exc, PlaywrightError):
        return exc
    msg = redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if proxy is not None and any(code in msg for code in PROXY_AUTH_CODES):
        return ProxyAuthError(f"proxy {proxy} refused the tunnel or the credentials: {msg}", phase, proxy)
    if any(code in msg for code in PROXY_CODES):
        return ProxyError(f"proxy {proxy} failed: {msg}", phase, proxy)
    if "crash" in msg.lower():
        return BrowserCrashed(f"the page crashed: {msg}", phase)
    if any(m in msg for m in CLOSED_MARKERS):
        if not browser_alive:
            return BrowserCrashed(f"the browser went away during the task: {msg}", phase)
        return BrowserHung(f"the page was closed under the task: {msg}", phase)
    if isinstance(exc, PlaywrightTimeout) or "net::ERR_" in msg:
        return NavigationError(msg, phase)
    return exc


class BrowserRuntime:
    def __init__(
        self,
        options: BrowserOptions,
        pool: str,
        slot_index: int,
        tag: ProcessTag,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        self.options = options
        self.pool = pool
        self.slot_index = slot_index
        self.slot_id = f"{pool}:{slot_index}"
        self.clock = clock
        self.rng = rng or random.Random(options.identity.seed)
        self.host = BrowserHost(options, tag)
        self.proxies = ProxyPool(options.proxies, options.proxy_policy, rng=self.rng)
        self.artifacts = ArtifactWriter(options.artifacts, pool, slot_index, clock)
        self.factory: IdentityFactory | None = None
        self.sessions: SessionManager | None = None
        self.counters: Counter[str] = Counter()
        self.in_flight: dict[str, TaskInfo] = {}
        self.live: dict[str, LiveContext] = {}  # session id → its kept context
        # behind a proxy the statuses of every navigation are watched (a 407 may come before any page);
        # without one the page's own status is read once, at the end of the task
        self._watch_responses = bool(options.proxies)
        self._making: dict[str, asyncio.Lock] = {}
        self.host.before_close = self._before_browser_close

    async def start(self) -> None:
        await self.host.start()
        if self.options.identity.enabled:
            self.factory = IdentityFactory(self.options.identity, self.host.version, rng=self.rng, clock=self.clock)
            await asyncio.to_thread(self.factory.warm, 2)
        persist = self.options.sessions.persist_dir
        self.sessions = SessionManager(
            self.options.sessions,
            self.factory or _NoIdentity(),
            self.proxies,
            clock=self.clock,
            persist_dir=Path(persist) / self.pool / str(self.slot_index) if persist else None,
        )

    async def close(self) -> None:
        self.live.clear()  # they go with Chromium
        await self.host.close()

    # -- one item ------------------------------------------------------------------------------------
    async def run(self, visit: Visit, item: Any, task_name: str = "task") -> Any:
        """Run ``visit(page, item)`` with recoveries; returns its value or raises the final error."""
        session = self.sessions.checkout()
        await self._close_retired()
        attempt = 1
        while True:
            proxy_id = session.proxy_id
            try:
                value, storage = await self._attempt(visit, item, session, f"{task_name}-a{attempt}", attempt)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    self.sessions.checkin(session, ok=False)
                    raise
                recovery = recovery_for(exc)
                self.counters[f"error.{type(exc).__name__}"] += 1
                self._report_proxy(proxy_id, exc)
                if recovery is Recovery.FAIL or attempt >= self.options.max_attempts:
                    self.sessions.checkin(session, ok=False)
                    await self._close_retired()
                    raise self._final(exc, attempt) from exc
                self.counters[f"recovery.{recovery.value}"] += 1
                log.info("task %s attempt %d: %s → %s", task_name, attempt, type(exc).__name__, recovery.value)
                try:
                    session = self._recover(recovery, session, proxy_id, exc)
                except ProxyError:  # no other healthy proxy: the error that got us here is the answer
                    self.sessions.checkin(session, ok=False)
                    raise self._final(exc, attempt) from exc
                attempt += 1
                continue
            if proxy_id is not None:
                self.proxies.report(proxy_id, Outcome.OK)
            self.sessions.checkin(session, ok=True, storage_state=storage)
            await self._close_retired()
            self.counters["ok"] += 1
            return value

    def _recover(self, recovery: Recovery, session: Session, proxy_id: str | None, exc: BaseException) -> Session:
        if recovery is Recovery.ROTATE_PROXY:
            return self.sessions.rotate_proxy(session, proxy_id)
        if recovery is Recovery.ROTATE_IDENTITY:
            return self.sessions.fresh(session, type(exc).__name__, avoid_proxies=[proxy_id] if proxy_id else [])
        if recovery is Recovery.RECYCLE_BROWSER:
            self.host.retire(f"requested after {type(exc).__name__}")
        return session

    def _report_proxy(self, proxy_id: str | None, exc: BaseException) -> None:
        if proxy_id is None:
            return
        if isinstance(exc, ProxyAuthError):
            self.proxies.report(proxy_id, Outcome.AUTH_FAILED)
        elif isinstance(exc, ProxyError):
            self.proxies.report(proxy_id, Outcome.CONNECT_FAILED)
        elif isinstance(exc, BlockedError):
            self.proxies.report(proxy_id, Outcome.REPUTATION)

    def _final(self, exc: BaseException, attempts: int) -> BaseException:
        phase = failed_phase(exc)
        where = f"slot {self.slot_id}" + (f", phase {phase!r}" if phase else "") + f", {attempts} attempt(s)"
        if isinstance(exc, BrowserError):
            final = type(exc).__new__(type(exc))
            final.__dict__.update(exc.__dict__)
            final.args = (f"{exc.args[0]} ({where})",)
            return final
        if isinstance(exc, PhaseTimeout):
            return exc  # its message names the phase and the slot already
        return AutomationError(f"{type(exc).__name__}: {redact_url(str(exc))} ({where})")

    def _keeps_context(self, session: Session) -> bool:
        return session.kept and self.options.sessions.keep_context

    async def _attempt(self, visit: Visit, item: Any, session: Session, name: str, attempt: int):
        identity = session.identity if self.options.identity.enabled else None
        proxy = self.proxies.get(session.proxy_id) if session.proxy_id else None
        info = TaskInfo(name, attempt, identity, proxy.display if proxy else None, session.id)
        art = self.options.artifacts
        # like Playwright Test's on-first-retry: tracing (DOM snapshots) every attempt is costly; a task
        # that fails after retries leaves the trace of its last attempt
        tracing = art.on_failure and (
            art.trace == "always"
            or (art.trace == "retry" and (attempt > 1 or self.options.max_attempts == 1))
        )
        async with self.host.lease() as browser:
            live: LiveContext | None = None
            context = page = None
            console = ConsoleLog(art.max_console_lines)
            token = CURRENT_TASK.set(info)
            self.in_flight[name] = info
            timed_out = failed = False
            listeners: list[tuple[str, Any]] = []
            try:
                try:
                    live = await self._context_for(browser, session, identity, proxy)
                    context = live.context
                    if tracing and live.active == 1:  # one trace per context: only a task alone in it
                        # DOM snapshots, no screencast: a failure gets its own screenshot anyway
                        await context.tracing.start(screenshots=False, snapshots=True)
                    else:
                        tracing = False
                    page = await self._page_for(live)
                    listeners = self._watch_task(page, info, console)
                    try:
                        async with asyncio.timeout(self.options.task_timeout_s):
                            value = await visit(page, item)
                    except TimeoutError as exc:
                        if isinstance(exc, PhaseTimeout):
                            raise
                        timed_out = True
                        raise
                    await self._check_blocked(page, info, proxy.display if proxy else None)
                    storage = None
                    if session.kept and (not live.kept or self.sessions.persist_dir is not None):
                        storage = await context.storage_state()  # carried to the next context / saved
                    if tracing and live.kept:
                        await context.tracing.stop()  # nothing failed: the trace is not kept
                    return value, storage
                except Exception as exc:
                    failed = True
                    err = classify(
                        exc,
                        phase=failed_phase(exc),
                        proxy=proxy.display if proxy else None,
                        browser_alive=self.host.browser is browser and browser.is_connected(),
                        last_status=info.last_status,
                        task_timeout=timed_out,
                    )
                    if art.on_failure:
                        await self.artifacts.save(
                            task=name, phase=failed_phase(err) or info.phase, error=err, page=page, context=context,
                            tracing=tracing, console=console,
                            meta={"identity": identity.id if identity else None, "proxy": info.proxy,
                                  "url": redact_url(page.url) if page is not None else None, "attempt": attempt},
                        )
                    if err is exc:
                        raise
                    raise err from exc
            finally:
                CURRENT_TASK.reset(token)
                self.in_flight.pop(name, None)
                if live is not None:
                    await self._end_task(live, page, console, listeners, failed)

    async def _context_for(self, browser: Any, session: Session, identity: Identity | None,
                           proxy: Any) -> LiveContext:
        """The session's kept context (made now if it has none, or if it was made on another Chromium
        or with another proxy), or a fresh context for this task alone."""
        keep = self._keeps_context(session)
        if not keep:
            return await self._new_context(browser, session, identity, proxy, keep)
        lock = self._making.setdefault(session.id, asyncio.Lock())
        async with lock:  # a session's tasks that start together share the context the first one makes
            return await self._kept_context(browser, session, identity, proxy)

    async def _kept_context(self, browser: Any, session: Session, identity: Identity | None,
                            proxy: Any) -> LiveContext:
        live = self.live.get(session.id)
        if live is not None and (live.browser is not browser or live.proxy_id != session.proxy_id):
            await self._retire_context(live, save=True)
            live = None
        if live is None:
            live = await self._new_context(browser, session, identity, proxy, True)
            self.live[session.id] = live
        else:
            live.tasks += 1
            live.active += 1
        return live

    async def _new_context(self, browser: Any, session: Session, identity: Identity | None, proxy: Any,
                           keep: bool) -> LiveContext:
        opts: dict[str, Any] = identity.context_options() if identity else {}
        if proxy is not None:
            opts["proxy"] = proxy.spec.playwright()
        if session.storage_state:
            opts["storage_state"] = session.storage_state
        context = await browser.new_context(**opts)
        context.set_default_navigation_timeout(self.options.navigation_timeout_s * 1000)
        live = LiveContext(context, browser, session.id, session.proxy_id,
                           ScopeOverrides(identity) if identity else None, keep, tasks=1, active=1)
        await self._prepare(live)
        self.counters["contexts.kept" if keep else "contexts.fresh"] += 1
        return live

    async def _page_for(self, live: LiveContext) -> Any:
        """A tab for the task: one a finished task of the session left (kept contexts), else a new one."""
        while live.idle_pages:
            page = live.idle_pages.pop()
            if not page.is_closed():
                self.counters["pages.reused"] += 1
                return page
        page = await live.context.new_page()
        if live.overrides is not None:
            cdp = await live.context.new_cdp_session(page)
            await prepare_page(cdp, live.overrides)
            shared = self.host.shared_workers
            if live.cdp_context_id is None and shared is not None:
                live.cdp_context_id = await browser_context_id(cdp)
                shared.register(live.cdp_context_id, live.overrides)
        return page

    def _watch_task(self, page: Any, info: TaskInfo, console: ConsoleLog) -> list[tuple[str, Any]]:
        """The task's own listeners on its page (removed when it ends): console log, navigation status;
        returns those to remove besides the console log's."""
        console.attach(page)
        if not self._watch_responses:
            return []  # the status is read from the page at the end (one round trip, not an event per request)

        def on_response(resp: Any) -> None:
            with contextlib.suppress(Exception):
                if resp.frame is page.main_frame and resp.request.is_navigation_request():
                    info.last_status = resp.status
                    info.statuses.append(resp.status)

        page.on("response", on_response)
        return [("response", on_response)]

    async def _end_task(self, live: LiveContext, page: Any, console: ConsoleLog,
                        listeners: list[tuple[str, Any]], failed: bool) -> None:
        """A task is done with its context: its tab goes back to the session (kept contexts, the task
        succeeded) or is closed; a fresh context is closed; a kept one in which a task failed takes no
        new task — whatever broke may still be in it — and closes once its other tasks end."""
        live.active -= 1
        if page is not None:
            with contextlib.suppress(Exception):
                console.detach(page)
                for event, handler in listeners:
                    page.remove_listener(event, handler)
        if not live.kept:
            await self._drop(live, save=False)
            return
        if failed:
            live.retiring = True
            if self.live.get(live.session_id) is live:
                del self.live[live.session_id]
        if page is not None:
            if (not live.retiring and self.options.sessions.reuse_pages and not page.is_closed()
                    and len(live.idle_pages) < self.options.sessions.tasks_per_session):
                live.idle_pages.append(page)
            else:
                await self._close_page(live, page)
        if live.retiring and live.active == 0:
            await self._drop(live, save=failed)

    async def _retire_context(self, live: LiveContext, save: bool) -> None:
        """Take a kept context out of use: closed now if no task is in it, else when the last one ends."""
        live.retiring = True
        if self.live.get(live.session_id) is live:
            del self.live[live.session_id]
        if live.active == 0:
            await self._drop(live, save=save)

    async def _prepare(self, live: LiveContext) -> None:
        context = live.context
        if live.overrides is not None:
            await context.add_init_script(live.overrides.script)

            async def on_page(p: Any) -> None:
                # a popup (the task's own pages have no opener and are prepared by _page_for): its
                # first document ran with the init script's values; from here on it has the overrides
                with contextlib.suppress(Exception):
                    if await p.opener() is not None:
                        await prepare_page(await context.new_cdp_session(p), live.overrides)

            context.on("page", lambda p: asyncio.ensure_future(on_page(p)))
        blocked = set(self.options.block_resources)
        if blocked:
            async def route(r: Any) -> None:
                rtype = r.request.resource_type
                kind = rtype if rtype in ("image", "font", "media", "stylesheet") else "other"
                if kind in blocked and rtype != "document":
                    await r.abort()
                else:
                    await r.continue_()

            await context.route("**/*", route)

    async def _check_blocked(self, page: Any, info: TaskInfo, proxy: str | None) -> None:
        policy = self.options.proxy_policy
        found = None
        if not page.is_closed() and (policy.challenge_selectors or not self._watch_responses):
            # one round trip: the page's own navigation status (Navigation Timing, where no response
            # listener recorded it) and the first challenge widget it shows
            with contextlib.suppress(Exception):
                status, found = await asyncio.wait_for(page.evaluate(CHECK_JS, policy.challenge_selectors), 5)
                if not self._watch_responses and status:
                    info.last_status = int(status)
                    info.statuses.append(info.last_status)
        if info.last_status == 407:
            raise ProxyAuthError(f"proxy {proxy} rejected the credentials (HTTP 407)", info.phase, proxy)
        if info.last_status in policy.block_statuses:
            raise BlockedError(f"the site answered HTTP {info.last_status}", info.phase)
        if found:
            raise BlockedError(f"the page shows a captcha/challenge ({found})", info.phase)

    async def _close_page(self, live: LiveContext, page: Any) -> None:
        """End a task's page in a kept context; one that won't close takes its context with it."""
        if page is None:
            return
        try:
            await asyncio.wait_for(page.close(), self.options.close_timeout_s)
        except Exception:
            await self._retire_context(live, save=False)

    async def _drop(self, live: LiveContext, save: bool) -> None:
        """Close a context; ``save``: first read its cookies and storage into its session (when the
        session goes on and Chromium still answers), so the session's next context starts with them."""
        if self.live.get(live.session_id) is live:
            del self.live[live.session_id]
        session = self.sessions.sessions.get(live.session_id) if self.sessions else None
        if save and session is not None and session.retired is None and live.browser.is_connected():
            with contextlib.suppress(Exception):
                session.storage_state = await asyncio.wait_for(live.context.storage_state(), self.options.close_timeout_s)
        if self.host.shared_workers is not None:
            self.host.shared_workers.forget(live.cdp_context_id)
        await self._close_context(live.context)

    async def _close_retired(self) -> None:
        """Close the kept contexts of sessions that retired (too old, too used, blocked)."""
        for live in [v for k, v in self.live.items() if k not in self.sessions.sessions]:
            await self._retire_context(live, save=False)
        for sid in [k for k, lock in self._making.items() if k not in self.sessions.sessions and not lock.locked()]:
            del self._making[sid]

    async def _before_browser_close(self, browser: Any) -> None:
        """Chromium is about to recycle: the kept contexts on it go, their cookies and storage saved."""
        for live in [v for v in self.live.values() if v.browser is browser]:
            await self._retire_context(live, save=True)

    async def _close_context(self, context: Any) -> None:
        try:
            await asyncio.wait_for(context.close(), self.options.close_timeout_s)
        except Exception as exc:
            if not isinstance(exc, TimeoutError):
                return  # the browser is gone already
            await self.host.kill(f"a context did not close within {self.options.close_timeout_s:g}s")

    def snapshot(self, browser_rss_mb: float | None = None) -> dict[str, Any]:
        """Browser, proxy and session health for the slot's health report (no secrets).

        Call it on the event loop; measure ``browser_rss_mb`` (``host.rss_mb()``) off it if you like.
        """
        if browser_rss_mb is None:
            browser_rss_mb = self.host.rss_mb()
        return {
            "browser": self.host.snapshot(),
            "browser_rss_mb": round(browser_rss_mb, 1),
            "proxies": self.proxies.snapshot(),
            "sessions": self.sessions.snapshot() if self.sessions else None,
            "contexts_live": len(self.live),
            "counters": dict(self.counters),
            "in_flight": {k: v.phase for k, v in self.in_flight.items()},
            "artifacts_saved": self.artifacts.saved,
        }


class _NoIdentity:
    """Identity factory of a pool with ``identity.enabled: false``: Chromium's defaults."""

    def generate(self, country: str | None = None) -> Any:
        return None
