"""One Playwright driver and one Chromium process per slot: launch, lease, recycle, watchdog.

Tasks :meth:`BrowserHost.lease` the browser. After ``pages_per_browser`` leases, above
``max_browser_rss_mb``, after a crash or when asked, the browser *retires*: new leases wait, the
leases in flight finish, then Chromium is closed (killed if it won't close) and a fresh one is
launched. The watchdog pings Chromium over CDP; one that stops answering is killed (its in-flight
tasks fail as :class:`~fleet_ray.errors.BrowserHung` and are retried) and relaunched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psutil

from fleet_ray.errors import BrowserLaunchError
from fleet_ray.spec.browser_options import BrowserOptions

from .reaper import OWNER_ENV, ProcessTag, kill_processes, write_launcher
from .scopes import SharedWorkers

log = logging.getLogger(__name__)

BASE_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-blink-features=AutomationControlled",
    "--disable-dev-shm-usage",
]


class BrowserHost:
    def __init__(self, options: BrowserOptions, tag: ProcessTag):
        self.options = options
        self.tag = tag
        self.browser: Any = None
        self.version: str | None = None
        self.launches = 0
        self.pages = 0
        self.total_pages = 0
        self.recycle_reasons: Counter[str] = Counter()
        self.crashes = 0
        self._pw: Any = None
        self._cdp: Any = None
        self._active = 0
        self._retiring: str | None = None
        self._closing_on_purpose = False
        self._cond = asyncio.Condition()
        self._watchdog: asyncio.Task | None = None
        self._closed = False
        self.launch_error: str | None = None
        # identities on the shared workers of this Chromium (see fleet_ray.browser.scopes)
        self.shared_workers: SharedWorkers | None = None
        # called with the browser before a recycle closes it (the runtime saves its kept contexts)
        self.before_close: Callable[[Any], Awaitable[None]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        from playwright.async_api import async_playwright

        os.environ[OWNER_ENV] = self.tag.owner  # the node driver inherits it (reaper's tag)
        self._pw = await async_playwright().start()
        async with self._cond:
            await self._launch()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog
        async with self._cond:
            await self._shutdown_browser()
        if self._pw is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pw.stop(), 10)
            self._pw = None
        shutil.rmtree(self.tag.owner_dir, ignore_errors=True)

    @property
    def recycles(self) -> int:
        return sum(self.recycle_reasons.values())

    def processes(self, among: list[psutil.Process] | None = None) -> list[psutil.Process]:
        """Chromium processes of the current browser (all of its process tree), found among this
        process's descendants (``among``, when the caller listed them already)."""
        prefix = str(self.tag.owner_dir / f"b{self.launches}")
        out = []
        for p in psutil.Process().children(recursive=True) if among is None else among:
            with contextlib.suppress(psutil.Error):
                if any(a.startswith("--user-data-dir=" + prefix) for a in p.cmdline()):
                    out.append(p)
        return out

    def rss_mb(self, among: list[psutil.Process] | None = None) -> float:
        """Memory of Chromium's process tree, MiB (see :func:`tree_memory_mb`; ``among`` as for
        :meth:`processes`)."""
        return tree_memory_mb(self.processes(among))

    async def _launch(self) -> None:
        from playwright.async_api import Error as PlaywrightError

        self.launches += 1
        udd = self.tag.user_data_dir(self.launches)
        launcher = write_launcher(self.tag.root)
        env = {
            **os.environ,
            "FLEET_RAY_CHROMIUM": self.options.executable_path,
            "FLEET_RAY_USER_DATA_DIR": str(udd),
        }
        if not os.access(self.options.executable_path, os.X_OK):
            self.launch_error = f"Chromium not found or not executable at {self.options.executable_path}"
            raise BrowserLaunchError(self.launch_error)
        try:
            browser = await self._pw.chromium.launch(
                executable_path=str(launcher),
                headless=self.options.headless,
                args=[*BASE_ARGS, *self.options.extra_args],
                ignore_default_args=["--enable-automation"],
                env=env,
                timeout=self.options.launch_timeout_s * 1000,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.launch_error = f"could not launch {self.options.executable_path}: {first}"
            raise BrowserLaunchError(self.launch_error) from exc
        self.launch_error = None
        self._closing_on_purpose = False
        browser.on("disconnected", lambda _b, me=browser: self._on_disconnect(me))
        self.browser = browser
        self.version = browser.version
        self.pages = 0
        self._retiring = None
        self._cdp = await browser.new_browser_cdp_session()
        self.shared_workers = None
        if self.options.identity.enabled:
            self.shared_workers = SharedWorkers(browser)
            await self.shared_workers.start()
        log.info("chromium %s launched (launch %d, %s)", self.version, self.launches, udd)

    async def _shutdown_browser(self) -> None:
        browser, self.browser, self._cdp = self.browser, None, None
        if browser is None:
            return
        self._closing_on_purpose = True
        procs = self.processes()
        try:
            await asyncio.wait_for(browser.close(), self.options.close_timeout_s)
        except Exception as exc:
            log.warning("chromium would not close (%s); killing it", type(exc).__name__)
        kill_processes([p for p in procs if p.is_running()], timeout_s=2)
        shutil.rmtree(self.tag.owner_dir / f"b{self.launches}", ignore_errors=True)

    def _on_disconnect(self, browser: Any) -> None:
        if browser is not self.browser or self._closing_on_purpose:
            return
        self.crashes += 1
        log.warning("chromium disconnected (crashed or killed); it will be relaunched")
        self.retire("browser crashed")

    # -- leasing -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Any]:
        async with self._cond:
            while self._retiring is not None or self.browser is None:
                if self._active == 0:
                    await self._recycle_locked()
                else:
                    await self._cond.wait()
            self._active += 1
            self.pages += 1
            self.total_pages += 1
            browser = self.browser
            if self.pages >= self.options.pages_per_browser:
                self._retiring = f"{self.options.pages_per_browser} pages"
        try:
            yield browser
        finally:
            async with self._cond:
                self._active -= 1
                if self._retiring is not None and self._active == 0 and not self._closed:
                    await self._recycle_locked()
                self._cond.notify_all()

    def retire(self, reason: str) -> None:
        """Recycle the browser once the tasks in flight finish (new tasks wait for the fresh one)."""
        if self._retiring is None:
            self._retiring = reason
            if self._active == 0 and not self._closed:
                asyncio.get_running_loop().create_task(self._recycle_when_idle())

    async def kill(self, reason: str) -> None:
        """Kill Chromium now (it is hung): in-flight tasks fail and the next lease relaunches."""
        log.warning("killing chromium: %s", reason)
        self.retire(reason)
        self._closing_on_purpose = True
        kill_processes(self.processes(), timeout_s=2)

    async def _recycle_when_idle(self) -> None:
        async with self._cond:
            if self._retiring is not None and self._active == 0 and not self._closed:
                await self._recycle_locked()
            self._cond.notify_all()

    async def _recycle_locked(self) -> None:
        reason = self._retiring or "not running"
        if self.browser is not None or self._retiring is not None:
            self.recycle_reasons[_reason_kind(reason)] += 1
            log.info("recycling chromium: %s", reason)
        if self.before_close is not None and self.browser is not None and self.browser.is_connected():
            try:
                await self.before_close(self.browser)
            except Exception:
                log.exception("saving the browser's contexts before a recycle failed; recycling anyway")
        await self._shutdown_browser()
        await self._launch()

    # -- watchdog ----------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.options.watchdog_interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("browser watchdog check failed; continuing")

    async def check(self) -> None:
        """One watchdog round: ping Chromium, check its memory."""
        cdp = self._cdp
        if cdp is None or self._retiring is not None:
            return
        try:
            await asyncio.wait_for(cdp.send("Browser.getVersion"), self.options.ping_timeout_s)
        except TimeoutError:
            await self.kill(f"chromium did not answer a ping within {self.options.ping_timeout_s:g}s")
            return
        except Exception:
            return  # disconnected: handled by the disconnect event
        limit = self.options.max_browser_rss_mb
        if limit is not None:
            rss = await asyncio.to_thread(self.rss_mb)
            if rss > limit:
                self.retire(f"rss {rss:.0f} MiB above {limit:g} MiB")

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "launches": self.launches,
            "pages_since_launch": self.pages,
            "pages": self.total_pages,
            "recycles": dict(self.recycle_reasons),
            "crashes": self.crashes,
            "retiring": self._retiring,
        }


def tree_memory_mb(procs: list[psutil.Process]) -> float:
    """Memory of a process tree, MiB, counting pages shared between its processes once.

    Summed RSS counts Chromium's shared pages (its binary, shared memory) once per process: a tree
    whose PSS is 0.9 GiB reads 3 GiB, which made a 1,500 MiB limit recycle Chromium every few
    seconds. PSS itself costs ~150 ms per Chromium tree (the kernel walks every page table), so this
    takes each process's private resident memory (RSS less its shared pages, from statm) plus the
    largest shared set once: within ~20% above PSS, and as cheap as RSS.
    """
    private = shared = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_info()
            sh = getattr(info, "shared", 0)  # Linux: file-backed and shmem resident pages
            private += info.rss - sh
            shared = max(shared, sh)
    return (private + shared) / 2**20


def _reason_kind(reason: str) -> str:
    for kind in ("pages", "rss", "crashed", "ping", "hung", "close", "requested"):
        if kind in reason:
            return kind
    return "other"
