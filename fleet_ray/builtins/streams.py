"""Built-in automations for typed streams and failure handling (smoke tests, demos, benchmarks).

- ``builtin.numbers`` (:class:`NumberSource`) emits ``count`` :class:`Number` items, then idles;
- ``builtin.relay`` (:class:`Relay`) reads numbers and emits them doubled;
- ``builtin.probe`` (:class:`Probe`) processes batch items inside a named phase and can fail,
  hang or crash a thread on chosen items, and log every item it processes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.automation import BatchAutomation, ContinuousAutomation
from fleet_ray.errors import StreamItemInvalid


class Number(BaseModel):
    n: int
    producer: str = ""


class Doubled(BaseModel):
    n: int
    doubled: int
    relay: str = ""


class NumberSource(ContinuousAutomation):
    """Emits ``count`` numbers (``start``, ``start+1``, ...) to ``numbers``, flushes, then idles."""

    outputs = {"numbers": Number}

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = Field(100, ge=0)
        start: int = 0
        every_s: float = Field(0.0, ge=0, description="Pause between items.")
        invalid_every: int | None = Field(None, ge=1, description="Also emit an invalid item every N items.")
        log_path: str | None = Field(None, description="Append each number here once its emit returned.")

    async def run(self) -> None:
        cfg, slot = self.config, self.ctx.slot.slot_id
        emitted = invalid = 0
        for i in range(cfg.start, cfg.start + cfg.count):
            if self.ctx.stopping:
                return
            if cfg.invalid_every and i % cfg.invalid_every == 0:
                try:
                    await self.ctx.emit("numbers", {"n": "not a number", "producer": slot})
                except StreamItemInvalid:
                    invalid += 1
            await self.ctx.emit("numbers", Number(n=i, producer=slot))
            emitted += 1
            if cfg.log_path:
                with open(cfg.log_path, "a") as f:
                    f.write(f"{i}\n")
            if emitted % 50 == 0 or emitted == cfg.count:
                self.ctx.report_progress(emitted=emitted, invalid=invalid)
            if cfg.every_s:
                await self.ctx.sleep(cfg.every_s)
        await self.ctx.flush()
        self.ctx.report_progress(emitted=emitted, invalid=invalid, flushed=True)
        while await self.ctx.sleep(3600):
            pass


class Relay(ContinuousAutomation):
    """Reads ``numbers`` and emits each doubled to ``doubled``."""

    inputs = {"numbers": Number}
    outputs = {"doubled": Doubled}

    async def run(self) -> None:
        relayed = 0
        async for number in self.ctx.read("numbers"):
            await self.ctx.emit("doubled", Doubled(n=number.n, doubled=2 * number.n, relay=self.ctx.slot.slot_id))
            relayed += 1
            if relayed % 50 == 0:
                self.ctx.report_progress(relayed=relayed)
        await self.ctx.flush()


class ProbeError(ValueError):
    """What :class:`Probe` raises on the items it is told to fail."""


class Probe(BatchAutomation):
    """Processes items in phase ``phase``; fails, hangs or crashes a thread on the items it is told to."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        phase: str = "work"
        delay_s: float = Field(0.0, ge=0)
        fail_on: list[Any] = Field(default_factory=list, description="Items that raise ProbeError.")
        hang_on: list[Any] = Field(default_factory=list, description="Items that sleep (nearly) forever.")
        thread_crash_on: list[Any] = Field(default_factory=list, description="Items whose thread raises, then hang.")
        log_path: str | None = Field(None, description="Append '<item>' to this file for every item processed.")

    async def process(self, item: Any) -> Any:
        cfg = self.config
        async with self.ctx.phase(cfg.phase):
            self.ctx.step(f"item {item}")
            if cfg.log_path:
                with open(cfg.log_path, "a") as f:
                    f.write(f"{item}\n")
            if cfg.delay_s:
                await asyncio.sleep(cfg.delay_s)
            if item in cfg.thread_crash_on:
                threading.Thread(target=self._explode, args=(item,), daemon=True).start()
                await asyncio.sleep(3600)
            if item in cfg.hang_on:
                await asyncio.sleep(3600)
            if item in cfg.fail_on:
                check_item(item)
        return {"item": item, "pid": os.getpid(), "at": time.time()}

    @staticmethod
    def _explode(item: Any) -> None:
        raise RuntimeError(f"probe thread crashed on item {item!r}")


def check_item(item: Any) -> None:
    raise ProbeError(f"probe refused item {item!r}")
