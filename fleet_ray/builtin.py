"""Built-in automations, useful for smoke tests and benchmarks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.automation import BatchAutomation


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
