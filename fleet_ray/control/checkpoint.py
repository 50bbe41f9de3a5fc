"""The supervisor's checkpoint: what a restarted supervisor needs to carry on, as one model.

Written as JSON under ``keys.SUPERVISOR_CHECKPOINT`` (the shape is unchanged from earlier versions, so
a new supervisor reads an old checkpoint). Generations are written ahead separately (``gen:`` keys, one
per slot position) before a slot actor exists; :func:`write_ahead_generations` parses them back.

Reading one is lenient where it can be: a pool, a slot record or a rollout this version rejects is
left out (its problem listed, the pool's spec kept as written for the next checkpoint, its slot
generations kept as floors), and the rest restores. Only a checkpoint whose envelope or fleet-level
fields are unreadable is rejected as a whole (:class:`CheckpointRejected`). Problems are reported as
``"<field>: <message>"`` without the input Pydantic would echo (a pool's config may hold a password).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet_ray.spec.models import FleetSpec, PoolSpec

from .autoscale import ScaleState
from .lifecycle import SlotKey, SlotRecord, SlotTable
from .pool_scaling import PoolScale
from .rollout import Rollout
from .state import FleetState


class CheckpointRejected(ValueError):
    """The checkpoint can't be read by this version at all; ``problems`` name the fields (no values)."""

    def __init__(self, problems: list[str]):
        self.problems = problems or ["checkpoint: unreadable"]
        super().__init__("recovery failed: " + "; ".join(self.problems[:5]))


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """``"<prefix><loc>: <msg>"`` per error, without the input value or docs URL Pydantic adds."""
    out = []
    for e in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "checkpoint")
        out.append(f"{where}: {e['msg']}")
    return out


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spec: dict[str, Any] = Field(description="The desired FleetSpec, as JSON.")
    batch: dict[str, bool] = Field(default_factory=dict, description="Pool -> runs a batch automation.")
    slots: list[dict[str, Any]] = Field(default_factory=list, description="SlotRecord.persisted() of each position.")
    retired_generations: list[tuple[str, int, int]] = Field(
        default_factory=list, description="(pool, index, generation) floors of removed positions.")
    rollouts: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Rollouts by pool.")
    saved_at: float = Field(0.0, description="Epoch seconds when it was taken.")
    run_id: str = Field("", description="The fleet run (from `up` to `down`) this checkpoint belongs to.")
    autoscale: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Autoscaled pools' ScaleState (delay windows, cool-down), by pool.")

    @classmethod
    def of(cls, state: FleetState, now: float) -> Checkpoint:
        spec = state.spec.model_dump(mode="json")
        spec["pools"] += [p for n, p in state.unrecovered_pools.items() if n not in state.desired]
        return cls(
            spec=spec,
            batch=dict(state.batch),
            slots=[r.persisted() for r in state.table],
            retired_generations=[(p, i, g) for (p, i), g in state.table.floors().items()],
            rollouts={n: r.to_json() for n, r in state.rollouts.items()},
            saved_at=now,
            run_id=state.run_id,
            autoscale={n: s.state.to_json() for n, s in list(state.autoscale.items())},
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Checkpoint:
        """The checkpoint's envelope; :class:`CheckpointRejected` (fields named, no values) if unreadable."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise CheckpointRejected(validation_problems(exc)) from None

    def restore_into(self, state: FleetState) -> list[str]:
        """Make ``state`` what this checkpoint recorded (spec, batch flags, rollouts, slot table) and
        return what was left out (``"<field>: <message>"``). Raises :class:`CheckpointRejected`, with
        ``state`` untouched, when the fleet-level fields are unreadable."""
        problems: list[str] = []
        spec, unrecovered = self._spec(problems)
        state.set_desired(spec)
        state.unrecovered_pools = unrecovered
        state.run_id = self.run_id
        state.batch = {n: b for n, b in self.batch.items() if n not in unrecovered}
        state.rollouts = {}
        for name, r in self.rollouts.items():
            if name in unrecovered:
                continue
            try:
                state.rollouts[name] = Rollout.from_json(r)
            except (TypeError, ValueError, KeyError) as exc:
                problems.append(f"rollouts.{name}: {type(exc).__name__}")
        state.table = SlotTable()
        for i, r in enumerate(self.slots):
            key, generation = _position(r)
            if key is not None and key[0] in unrecovered:  # no record, but its generation stays used
                state.table.raise_floor(key, generation)
                continue
            try:
                state.table.add(SlotRecord.restore(r))
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                problems.append(f"slots.{i}: {type(exc).__name__}")
                if key is not None:  # never hand its generation out again
                    state.table.raise_floor(key, generation)
        for p, i, g in self.retired_generations:
            state.table.raise_floor((p, i), g)
        state.autoscale = {}
        for name, raw in self.autoscale.items():
            if name not in state.desired or state.desired[name].autoscale is None:
                continue
            try:
                state.autoscale[name] = PoolScale(ScaleState.from_json(raw))
            except (TypeError, ValueError) as exc:
                problems.append(f"autoscale.{name}: {type(exc).__name__}")
        return problems

    def _spec(self, problems: list[str]) -> tuple[FleetSpec, dict[str, dict]]:
        fleet = {k: v for k, v in self.spec.items() if k != "pools"}
        try:
            base = FleetSpec.model_validate({**fleet, "pools": []})
        except ValidationError as exc:
            raise CheckpointRejected(validation_problems(exc, "spec.")) from None
        raw_pools = self.spec.get("pools", [])
        if not isinstance(raw_pools, list):
            raise CheckpointRejected(["spec.pools: Input should be a valid list"])
        pools: list[PoolSpec] = []
        unrecovered: dict[str, dict] = {}
        for i, raw in enumerate(raw_pools):
            name = raw.get("name") if isinstance(raw, dict) else None
            name = name if isinstance(name, str) and name else f"[{i}]"
            try:
                pool = PoolSpec.model_validate(raw)
            except ValidationError as exc:
                problems.extend(validation_problems(exc, f"spec.pools.{name}."))
                if isinstance(raw, dict):
                    unrecovered.setdefault(name, raw)
                continue
            if any(p.name == pool.name for p in pools):
                problems.append(f"spec.pools.{name}: appears twice (the first is kept)")
                continue
            pools.append(pool)
        return base.model_copy(update={"pools": pools}), unrecovered


def _position(r: Any) -> tuple[SlotKey | None, int]:
    """A persisted slot record's (pool, index) and generation, as far as they can be read."""
    if not isinstance(r, dict):
        return None, 0
    pool, index, gen = r.get("pool"), r.get("index"), r.get("generation")
    if not isinstance(pool, str) or not isinstance(index, int) or isinstance(index, bool):
        return None, 0
    return (pool, index), gen if isinstance(gen, int) and not isinstance(gen, bool) else 0


def write_ahead_generations(stored: dict[str, Any]) -> dict[SlotKey, int]:
    """``{"gen:<pool>:<index>": generation}`` → ``{(pool, index): generation}`` (unreadable ones skipped)."""
    out: dict[SlotKey, int] = {}
    for k, v in stored.items():
        parts = k.split(":")
        try:
            out[(parts[1], int(parts[2]))] = int(v)
        except (IndexError, TypeError, ValueError):
            continue
    return out
