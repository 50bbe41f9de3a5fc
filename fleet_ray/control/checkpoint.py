"""The supervisor's checkpoint: what a restarted supervisor needs to carry on, as one model.

Written as JSON under ``keys.SUPERVISOR_CHECKPOINT`` (the shape is unchanged from earlier versions, so
a new supervisor reads an old checkpoint). Generations are written ahead separately (``gen:`` keys, one
per slot position) before a slot actor exists; :func:`write_ahead_generations` parses them back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.spec.models import FleetSpec

from .lifecycle import SlotKey, SlotRecord, SlotTable
from .rollout import Rollout
from .state import FleetState


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spec: dict[str, Any] = Field(description="The desired FleetSpec, as JSON.")
    batch: dict[str, bool] = Field(default_factory=dict, description="Pool -> runs a batch automation.")
    slots: list[dict[str, Any]] = Field(default_factory=list, description="SlotRecord.persisted() of each position.")
    retired_generations: list[tuple[str, int, int]] = Field(
        default_factory=list, description="(pool, index, generation) floors of removed positions.")
    rollouts: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Rollouts by pool.")
    saved_at: float = Field(0.0, description="Epoch seconds when it was taken.")

    @classmethod
    def of(cls, state: FleetState, now: float) -> Checkpoint:
        return cls(
            spec=state.spec.model_dump(mode="json"),
            batch=dict(state.batch),
            slots=[r.persisted() for r in state.table],
            retired_generations=[(p, i, g) for (p, i), g in state.table.floors().items()],
            rollouts={n: r.to_json() for n, r in state.rollouts.items()},
            saved_at=now,
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Checkpoint:
        return cls.model_validate_json(raw)

    def restore_into(self, state: FleetState) -> None:
        """Make ``state`` what this checkpoint recorded (spec, batch flags, rollouts, slot table)."""
        state.set_desired(FleetSpec.model_validate(self.spec))
        state.batch = dict(self.batch)
        state.rollouts = {n: Rollout.from_json(r) for n, r in self.rollouts.items()}
        state.table = SlotTable()
        for r in self.slots:
            state.table.add(SlotRecord.restore(r))
        for p, i, g in self.retired_generations:
            state.table.raise_floor((p, i), g)


def write_ahead_generations(stored: dict[str, int]) -> dict[SlotKey, int]:
    """``{"gen:<pool>:<index>": generation}`` → ``{(pool, index): generation}``."""
    out: dict[SlotKey, int] = {}
    for k, v in stored.items():
        _, pool, idx = k.split(":")
        out[(pool, int(idx))] = v
    return out
