"""What a browser automation author writes::

    from fleet_ray.browser import BrowserAutomation

    class Titles(BrowserAutomation):
        async def visit(self, page, item):
            async with self.ctx.phase("open", timeout=20):
                await page.goto(item["url"])
            async with self.ctx.phase("extract", timeout=5):
                return {"title": await page.title()}

registered under the entry-point group ``fleet_ray.automations`` like any batch automation, and run
by a pool with ``kind: browser``. Each ``visit`` gets a fresh page in a fresh browser context with
the task's identity and proxy; ``self.task`` tells which (identity, proxy, attempt, phase).

Importing this module does not import Playwright, so specs naming browser automations validate on
nodes without the browser extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fleet_ray.automation import BatchAutomation, ConfigT, Context
from fleet_ray.errors import AutomationError

from .runtime import CURRENT_TASK, TASK_NAME, TaskInfo


class BrowserSlotContext(Context):
    """The context of a browser slot: ``ctx.browser`` is the slot's runtime, and ``phase`` also
    records the phase on the task in flight and tags a failure with the phase it happened in."""

    browser: Any = None

    @contextlib.asynccontextmanager
    async def phase(self, name: str, timeout: float | None = None) -> AsyncIterator[Context]:
        task = CURRENT_TASK.get()
        outer = task.phase if task else None
        if task is not None:
            task.phase = name
        try:
            async with super().phase(name, timeout):
                yield self
        except BaseException as exc:
            if getattr(exc, "fleet_phase", None) is None:
                with contextlib.suppress(AttributeError, TypeError):
                    exc.fleet_phase = name
            raise
        finally:
            if task is not None:
                task.phase = outer


class BrowserAutomation(BatchAutomation[ConfigT]):
    """A batch automation whose items are handled by ``visit(page, item)`` in a browser slot."""

    async def visit(self, page: Any, item: Any) -> Any:
        raise NotImplementedError

    @property
    def task(self) -> TaskInfo | None:
        """The task in flight in this coroutine (identity, proxy display name, attempt, phase)."""
        return CURRENT_TASK.get()

    async def process(self, item: Any) -> Any:
        runtime = getattr(self.ctx, "browser", None)
        if runtime is None:
            raise AutomationError(
                f"{type(self).__qualname__} is a BrowserAutomation: run it in a pool with kind: browser"
            )
        return await runtime.run(self.visit, item, TASK_NAME.get())
