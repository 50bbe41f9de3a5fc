"""Campaign members in Chromium: a page with the member's identity, under the guardrails.

``ctx.page(url)`` (see :meth:`MemberContext.page`) opens ``url`` in a fresh browser context built
from the member's identity — user agent, viewport, locale, timezone, extra headers, its proxy
(credentials go to Chromium only, never into logs, receipts or errors) and its cookie jar, which it
shares with ``ctx.http`` (cookies a page sets are there for the member's next fetch or page, and the
other way round). The navigation is one guarded operation: policy, breaker and the target's
rate-limit slot apply as for ``ctx.fetch``, and its HTTP status and challenge markers count against
the target's breaker.

Each worker thread that opens pages keeps one Chromium (Debian's ``/usr/bin/chromium`` by default,
driven by Playwright's sync API, started through the browser add-on's launcher so it dies with its
owner; Playwright never downloads a browser). :class:`ChromiumPages` is the page opener whoever builds
a :class:`~fleet_ray.campaign.member.MemberRuntime` hands it (the campaign's local executor, the Ray
worker actors); the campaign core itself never imports this module at module level. Needs the browser
extra: ``pip install 'fleet-ray[browser]'``. This module imports Playwright lazily and never imports Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from http.cookiejar import Cookie
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import psutil

from fleet_ray.browser.host import BASE_ARGS
from fleet_ray.browser.reaper import default_root, write_launcher
from fleet_ray.campaign.proxies import is_reputation_hit
from fleet_ray.errors import CampaignError
from fleet_ray.names import DEFAULT_CHROMIUM as DEFAULT_CHROMIUM_PATH
from fleet_ray.redact import redact_url

if TYPE_CHECKING:
    from fleet_ray.campaign.member import MemberContext

log = logging.getLogger(__name__)
# FLEET_CHROMIUM_PATH is the fleet-wide setting (fleet_ray.settings); FLEET_CHROMIUM its older name
DEFAULT_CHROMIUM = os.environ.get("FLEET_CHROMIUM_PATH") or os.environ.get("FLEET_CHROMIUM") or DEFAULT_CHROMIUM_PATH


def playwright_proxy(url: str | None) -> dict[str, str] | None:
    """``http://user:pw@host:port`` → Playwright's proxy option (credentials in their own fields)."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        raise CampaignError(f"proxy {redact_url(url)} names no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 keeps its brackets
    server = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    out = {"server": server}
    if parts.username:
        out["username"] = unquote(parts.username)
        out["password"] = unquote(parts.password or "")
    return out


def context_options(identity: Any, proxy: str | None) -> dict[str, Any]:
    """Playwright ``new_context`` options for a campaign :class:`~fleet_ray.campaign.config.MemberIdentity`."""
    width, height = identity.viewport
    opts: dict[str, Any] = {
        "user_agent": identity.user_agent,
        "viewport": {"width": width, "height": height},
        "screen": {"width": max(width, 1920), "height": max(height + 80, 1080)},
        "locale": identity.locale,
        "timezone_id": identity.timezone,
    }
    if identity.headers:
        opts["extra_http_headers"] = dict(identity.headers)
    if proxy:
        opts["proxy"] = playwright_proxy(proxy)
    return opts


def jar_to_playwright(jar: Any, url: str) -> list[dict[str, Any]]:
    """Cookies of an ``httpx.Cookies`` jar as Playwright cookies (domainless ones bound to ``url``)."""
    out = []
    for c in jar.jar:
        item: dict[str, Any] = {"name": c.name, "value": c.value or ""}
        if c.domain:
            item.update(domain=c.domain, path=c.path or "/", secure=bool(c.secure),
                        httpOnly=c.has_nonstandard_attr("HttpOnly"))
            same_site = c.get_nonstandard_attr("SameSite")
            if same_site in ("Strict", "Lax", "None"):
                item["sameSite"] = same_site
            if c.expires:
                item["expires"] = float(c.expires)
        else:
            item["url"] = url
        out.append(item)
    return out


def playwright_to_jar(cookies: list[dict[str, Any]], jar: Any) -> None:
    """Store a context's cookies back into the member's ``httpx.Cookies`` jar."""
    for c in cookies:
        expires = c.get("expires")
        jar.jar.set_cookie(Cookie(
            version=0, name=c["name"], value=c["value"], port=None, port_specified=False,
            domain=c["domain"], domain_specified=c["domain"].startswith("."),
            domain_initial_dot=c["domain"].startswith("."), path=c.get("path") or "/", path_specified=True,
            secure=bool(c.get("secure")), expires=int(expires) if expires and expires > 0 else None,
            discard=not (expires and expires > 0), comment=None, comment_url=None,
            rest={**({"HttpOnly": ""} if c.get("httpOnly") else {}),
                  **({"SameSite": c["sameSite"]} if c.get("sameSite") else {})},
        ))


class Browsers:
    """One Chromium per worker thread that asked for one; all of them go on :meth:`close`.

    Playwright's sync objects belong to the thread that made them, so each thread keeps its own
    Playwright driver and relaunches Chromium through it when it died."""

    def __init__(self, executable: str = DEFAULT_CHROMIUM, headless: bool = True):
        self.executable = executable
        self.headless = headless
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: list[tuple[threading.Thread, Any]] = []  # (thread, playwright)
        self._pids: set[int] = set()  # Playwright drivers and the Chromium trees they started
        self._closed = False

    def get(self) -> Any:
        browser = getattr(self._local, "browser", None)
        if browser is not None and browser.is_connected():
            return browser
        if self._closed:
            raise CampaignError("the campaign's browsers are closed")
        if not os.access(self.executable, os.X_OK):
            raise CampaignError(f"Chromium not found or not executable at {self.executable}")
        pw = getattr(self._local, "pw", None)
        if pw is None:
            try:
                from playwright.sync_api import sync_playwright
            except ImportError as exc:
                raise CampaignError("ctx.page needs the browser extra: pip install 'fleet-ray[browser]'") from exc
            before = _children()
            pw = sync_playwright().start()
            self._local.pw = pw
            with self._lock:
                self._held.append((threading.current_thread(), pw))
                self._pids |= _children() - before
        before = _children(recursive=True)
        try:
            browser = pw.chromium.launch(
                executable_path=str(write_launcher(default_root())), headless=self.headless, args=list(BASE_ARGS),
                ignore_default_args=["--enable-automation"],
                env={**os.environ, "FLEET_RAY_CHROMIUM": self.executable},
                handle_sigint=False, handle_sigterm=False, handle_sighup=False,
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CampaignError(f"could not launch {self.executable}: {first[:200]}") from None
        with self._lock:
            self._pids |= _children(recursive=True) - before
            closed = self._closed
        if closed:  # close() ran while this one launched: it must not outlive the campaign
            with suppress(Exception):
                browser.close()
            raise CampaignError("the campaign's browsers are closed")
        self._local.browser = browser
        return browser

    def close(self) -> None:
        """Close this thread's browsers properly; kill the processes of the others (Playwright's sync
        objects belong to the thread that made them)."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, []
            pids, self._pids = self._pids, set()
        me = threading.current_thread()
        for thread, pw in held:
            if thread is me:
                with suppress(Exception):
                    pw.stop()  # closes its browsers, ends its driver
        procs = []
        for pid in pids:
            with suppress(psutil.Error):
                procs.append(psutil.Process(pid))
                procs += procs[-1].children(recursive=True)
        for p in procs:
            with suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=3)


def _children(recursive: bool = False) -> set[int]:
    """Pids of this process's Playwright drivers and Chromium processes (what ``Browsers`` starts)."""
    out = set()
    for p in psutil.Process().children(recursive=recursive):
        with suppress(psutil.Error):
            cmd = " ".join(p.cmdline())
            if "playwright" in cmd or "chromium" in cmd:
                out.add(p.pid)
    return out


class ChromiumPages:
    """The members' page opener (:class:`~fleet_ray.campaign.member.PageOpener`): pages from this
    worker's :class:`Browsers`, opened by :func:`open_page`; :meth:`close` ends every Chromium."""

    def __init__(self, browsers: Browsers | None = None):
        self.browsers = browsers or Browsers()  # Chromium per worker thread, started by the first ctx.page

    def open(self, ctx: MemberContext, url: str, wait_until: str = "domcontentloaded",
             timeout_s: float | None = None) -> AbstractContextManager[Any]:
        return open_page(ctx, self.browsers, url, wait_until, timeout_s)

    def close(self) -> None:
        self.browsers.close()


@contextmanager
def open_page(ctx: MemberContext, browsers: Browsers, url: str, wait_until: str = "domcontentloaded",
              timeout_s: float | None = None) -> Iterator[Any]:
    """See :meth:`MemberContext.page`."""
    config = ctx.config
    jar = ctx.http.cookies  # the member's jar (and its client warmed before the guard)
    browser = browsers.get()
    context = browser.new_context(**context_options(ctx.identity, ctx.spec.proxy))
    try:
        cookies = jar_to_playwright(jar, url)
        if cookies:
            context.add_cookies(cookies)
        page = context.new_page()
        timeout_ms = (timeout_s or config.request_timeout_s) * 1000
        with ctx.guard(url, url=url, method="GET") as g:
            from playwright.sync_api import Error as PlaywrightError

            try:
                response = page.goto(url, wait_until=wait_until, timeout=timeout_ms)
            except PlaywrightError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                g.fail(redact_url(first)[:200])
                raise CampaignError(f"member {ctx.member}: could not load {redact_url(url)}: "
                                    f"{redact_url(first)[:200]}") from None
            status = response.status if response is not None else None
            g.record.status = status
            try:
                text = page.content()[:20_000]
            except PlaywrightError:  # the page is navigating again (a script redirect, as challenges do)
                text = ""
            hit = is_reputation_hit(status, None, text)
            g.record.reputation_hit = hit
            if (status is not None and status in config.breaker.failure_statuses) or hit:
                g.fail(f"HTTP {status}" + (" (reputation hit)" if hit else ""), status)
        yield page
    finally:
        with suppress(Exception):
            playwright_to_jar(context.cookies(), jar)
        with suppress(Exception):
            context.close()
