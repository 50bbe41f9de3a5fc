"""What the supervisor knows and decides on, in one value its parts share.

:class:`FleetState` holds the desired state (the spec, its pools by name, which pools run batch
automations), the slot table, the rollouts in progress, and two dirty marks the checkpointer reads:
``dirty`` (write the checkpoint on the next persist tick) and ``routine_dirty`` (only task counts or
health moved: written at most every few seconds), and per autoscaled pool its scaling state. Every part of the supervisor gets this one object
instead of reaching into the supervisor for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet_ray.spec.models import FleetSpec, PoolSpec

from .lifecycle import SlotTable
from .pool_scaling import PoolScale
from .rollout import Rollout


@dataclass
class FleetState:
    fleet_name: str = "fleet"
    spec: FleetSpec = field(default_factory=FleetSpec)
    desired: dict[str, PoolSpec] = field(default_factory=dict)
    batch: dict[str, bool] = field(default_factory=dict)
    table: SlotTable = field(default_factory=SlotTable)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    recovered: bool = False
    dirty: bool = True
    routine_dirty: bool = False
    drained_from: dict[str, int] = field(default_factory=dict)  # pool -> slots before api drain
    # this fleet run (``up`` to ``down``; kept across supervisor restarts by the checkpoint): crash ids
    # carry it, so a new fleet's generation 1 is not the old one's
    run_id: str = ""
    # this supervisor incarnation's durable epoch (incremented by each recovery): the range of the
    # generations it hands out while it can't write them ahead (control/recovery.py)
    epoch: int = 0
    # recovery: why it has not succeeded yet ("recovery failed: <field>: <message>"), when the next
    # attempt is due (epoch s), and what a lenient recovery left out (each "<field>: <message>")
    recovery_error: str | None = None
    recovery_retry_at: float = 0.0
    recovery_problems: list[str] = field(default_factory=list)
    # pools a checkpoint held that this version rejects, as written (pool name -> spec JSON): kept in
    # the checkpoint, so a version that understands them again gets them back; an apply drops them
    unrecovered_pools: dict[str, dict] = field(default_factory=dict)
    # autoscaled pools: the policy's state (checkpointed, so a restarted supervisor keeps its delay windows
    # and cool-down) and the last decision (fleet_ray.control.pool_scaling)
    autoscale: dict[str, PoolScale] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.spec.pools:  # nothing applied yet: the empty spec carries the fleet's name
            self.spec = FleetSpec(name=self.fleet_name)

    def set_desired(self, spec: FleetSpec) -> None:
        self.spec, self.desired = spec, {p.name: p for p in spec.pools}
