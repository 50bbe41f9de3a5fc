"""Built-in automations, useful for smoke tests and benchmarks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.automation import BatchAutomation, ContinuousAutomation


class NoOp(BatchAutomation):
    """Returns nothing; measures the framework's own overhead."""

    async def process(self, item: Any) -> None:
        return None


class Echo(BatchAutomation):
    """Returns the item, tagged with the slot that processed it."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tag: str = Field("", description="Prefix added to string items.")
        in_place: bool = Field(True, description="Take config changes without a restart.")

    async def process(self, item: Any) -> dict[str, Any]:
        value = f"{self.config.tag}{item}" if isinstance(item, str) else item
        return {"item": value, "slot": self.ctx.slot.slot_id, "generation": self.ctx.slot.generation}

    def reconfigure(self, config: Config) -> bool:
        return config.in_place


class Sleep(BatchAutomation):
    """Waits ``delay_s`` per item, then returns the item (a stand-in for I/O-bound work)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        delay_s: float = Field(0.1, ge=0)

    async def process(self, item: Any) -> Any:
        await asyncio.sleep(self.config.delay_s)
        return item


class Chaos(ContinuousAutomation):
    """Misbehaves on purpose, for exercising the supervisor's healing (fail setup, crash, hang)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        fail_setup: bool = Field(False, description="Raise in setup(): the slot never starts.")
        crash_after_s: float | None = Field(None, gt=0, description="run() raises after this long.")
        unhealthy_after_s: float | None = Field(None, gt=0, description="Health probe fails after this long.")
        message: str = Field("", description="Text of the errors raised (default: says it was on purpose); "
                             "tests put multi-line text or credentials here to see what the fleet shows.")
        phase: str | None = Field(None, description="Run inside this phase, with a step saying what it waits for "
                                  "(what a crash record then names).")

    async def setup(self) -> None:
        if self.config.fail_setup:
            raise RuntimeError(self.config.message or "chaos: setup failed on purpose")
        self._t0 = time.monotonic()

    async def run(self) -> None:
        if self.config.phase is None:
            return await self._run()
        async with self.ctx.phase(self.config.phase):
            self.ctx.step(f"crash after {self.config.crash_after_s}s" if self.config.crash_after_s else "idle")
            await self._run()

    async def _run(self) -> None:
        while await self.ctx.sleep(self.config.crash_after_s or 3600):
            if self.config.crash_after_s:
                raise RuntimeError(self.config.message or "chaos: run() crashed on purpose")

    async def check_health(self) -> bool:
        limit = self.config.unhealthy_after_s
        return limit is None or time.monotonic() - self._t0 < limit
