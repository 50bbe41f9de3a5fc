"""A batch item's result as a driver sees it: what :class:`~fleet_ray.client.fleet.Job` and
:class:`~fleet_ray.client.runs.Run` both yield. No Ray."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ItemResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str
    ok: bool
    value: Any = None
    error: str | None = None
    attempts: int = 1
