"""The browser slot actor: a slot (``kind: browser``) that owns one Playwright driver and one Chromium.

It is a :class:`~fleet_ray.actors.slot.SlotCore` with a :class:`~fleet_ray.browser.runtime.BrowserRuntime`:

- on start it first reaps Chromium left on this node by dead slots, then launches its own
  (tagged, with a parent-death signal; see :mod:`fleet_ray.browser.reaper`), then starts the
  automation, which must be a :class:`~fleet_ray.browser.BrowserAutomation`;
- each batch item runs as a browser task (fresh context, identity, proxy, recoveries, artifacts)
  named ``<job>-<item>`` so artifacts and errors say which item failed, in which phase;
- its health report adds the browser's state (pages, recycles, crashes, proxy health, sessions)
  and its ``rss_mb`` is the whole process tree's memory (worker + driver + Chromium, with pages
  shared between Chromium's processes counted once), so the pool's ``recycle.max_rss_mb``
  bounds what the slot really uses;
- unless ``cpu_pinning: off``, the slot takes its share of the host's CPUs and confines its whole
  process tree to it (see :mod:`fleet_ray.browser.cpus`), re-balanced at each health check;
- with ``concurrency_bounds``, Chromium's memory over ``browser.max_browser_rss_mb`` is one of the
  pressures its concurrency yields to (``chromium_memory_ratio``);
- drain closes Chromium and the driver; a killed slot's Chromium dies with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import psutil
import ray

from fleet_ray.automation import Context
from fleet_ray.browser.automation import BrowserAutomation, BrowserSlotContext
from fleet_ray.browser.cpus import CpuShare
from fleet_ray.browser.host import tree_memory_mb
from fleet_ray.browser.reaper import ProcessTag, reap_stale
from fleet_ray.browser.runtime import TASK_NAME, BrowserRuntime
from fleet_ray.errors import AutomationError

from .slot import SlotCore, start_redacted

log = logging.getLogger(__name__)


def browser_slot_class():
    """The Ray actor class of browser slots (needs the ``browser`` extra on the slot's node)."""
    try:
        import playwright  # noqa: F401
    except ImportError as exc:
        raise AutomationError(
            "slot kind 'browser' needs the browser add-on: pip install 'fleet-ray[browser]'"
        ) from exc
    return BrowserSlotActor


class BrowserSlotCore(SlotCore):
    def __init__(
        self,
        pool: dict[str, Any],
        index: int,
        generation: int,
        workqueue: str | None,
        namespace: str,
        store_url: str | None = None,
    ):
        super().__init__(pool, index, generation, workqueue, namespace, store_url)
        self.runtime: Any = None
        self._runtime_lock = asyncio.Lock()
        self._tree_mb = 0.0
        self._chromium_mb: tuple[float, float] | None = None  # (when, MiB): the latest reading of Chromium's memory
        self.cpu_share: Any = None  # browser.cpus.CpuShare, unless cpu_pinning is off

    async def start(self) -> dict[str, Any]:
        async with self._runtime_lock:
            if self.runtime is None:
                reaped = await asyncio.to_thread(reap_stale)
                if reaped:
                    log.warning("slot %s: killed %d stale Chromium process(es) on start", self.lessee, reaped)
                tag = ProcessTag.for_slot(self.namespace, self.pool.name, self.identity.index, self.identity.generation)
                if self.pool.browser.cpu_pinning == "auto" and hasattr(os, "sched_setaffinity"):
                    # before the driver and Chromium start, so that they inherit the share
                    self.cpu_share = CpuShare(tag.root, tag.owner)
                    await asyncio.to_thread(self.cpu_share.apply, [psutil.Process()])
                runtime = BrowserRuntime(self.pool.browser, self.pool.name, self.identity.index, tag)
                await runtime.start()
                self.runtime = runtime
        return await super().start()

    def make_context(self, config: Any) -> Context:
        ctx = BrowserSlotContext(
            self.identity, config, logger=logging.getLogger(f"fleet_ray.automation.{self.pool.name}")
        )
        ctx.browser = self.runtime
        return ctx

    def make_automation(self, cls: type, ctx: Context) -> Any:
        if not issubclass(cls, BrowserAutomation):
            raise AutomationError(
                f"pool {self.pool.name!r} has kind: browser but {cls.__qualname__} is not a BrowserAutomation "
                "(subclass fleet_ray.browser.BrowserAutomation and implement visit(page, item))"
            )
        return cls(ctx)

    async def process_item(self, payload: Any, job_id: str, item_id: str, attempt: int) -> Any:
        token = TASK_NAME.set(f"{job_id}-{item_id}-r{attempt}")
        try:
            return await super().process_item(payload, job_id, item_id, attempt)
        finally:
            TASK_NAME.reset(token)

    async def health(self) -> dict[str, Any]:
        # /proc reads of a dozen processes off the loop; super().health() reports the tree's
        tree_mb, chromium_mb = await asyncio.to_thread(self._measure)
        self._tree_mb = tree_mb
        report = await super().health()
        if self.runtime is not None:
            report["browser"] = self.runtime.snapshot(chromium_mb)
            if self.cpu_share is not None:
                report["browser"]["cpu"] = self.cpu_share.snapshot()
            error = self.runtime.host.launch_error
            if error and report.get("ok"):
                report.update(ok=False, error=f"Chromium could not be relaunched: {error}")
        return report

    def rss_mb(self) -> float:
        return self._tree_mb  # measured by health() in a thread

    async def pressure_readings(self) -> dict[str, float | None]:
        """The host's pressure and Chromium's memory / ``browser.max_browser_rss_mb`` (a reading at most
        a second old: health() takes one too, and each is a dozen /proc reads, done in a thread)."""
        readings = await super().pressure_readings()
        limit = self.pool.browser.max_browser_rss_mb
        if self.runtime is None or not limit:
            return readings
        last = self._chromium_mb
        if last is None or time.monotonic() - last[0] >= 1.0:
            mb = await asyncio.to_thread(self.runtime.host.rss_mb)
            last = self._chromium_mb = (time.monotonic(), mb)
        readings["chromium_memory_ratio"] = last[1] / limit
        return readings

    def _measure(self) -> tuple[float, float]:
        """(the whole tree's memory, Chromium's), MiB (see tree_memory_mb); re-pins the tree to
        this slot's CPU share, which changes as browser slots on the host come and go."""
        try:
            me = psutil.Process()
            procs = [me, *me.children(recursive=True)]
            tree = tree_memory_mb(procs)
        except psutil.Error:
            procs, tree = [], 0.0
        if self.cpu_share is not None and procs:
            self.cpu_share.apply(procs)
        if self.runtime is None or not procs:
            return tree, 0.0
        chromium = self.runtime.host.rss_mb(among=procs[1:])  # Chromium is among our descendants
        self._chromium_mb = (time.monotonic(), chromium)  # (a thread's write of one attribute)
        return tree, chromium

    async def _teardown(self) -> None:
        await super()._teardown()
        if self.runtime is not None:
            try:
                await self.runtime.close()
            except Exception as exc:
                log.warning("slot %s: closing Chromium raised %s", self.lessee, exc)
            self.runtime = None
        if self.cpu_share is not None:
            await asyncio.to_thread(self.cpu_share.leave)  # the other slots on the host take its CPUs


@ray.remote(max_restarts=0)
class BrowserSlotActor(BrowserSlotCore):
    """A browser slot (see :class:`BrowserSlotCore`)."""

    async def start(self) -> dict[str, Any]:
        return await start_redacted(super().start, self.lessee)
