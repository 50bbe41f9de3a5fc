"""A supervisor core wired from fakes (fleet_ray.testing): no Ray, an in-memory store, a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleet_ray.actors.services import FleetServices
from fleet_ray.actors.supervisor_core import Parts, SupervisorCore
from fleet_ray.actors.supervisor_events import EventJournal
from fleet_ray.actors.supervisor_packages import PackageEnvs
from fleet_ray.actors.supervisor_records import StoreRecords
from fleet_ray.actors.supervisor_recovery import StateRecovery
from fleet_ray.actors.supervisor_specs import SpecEditor
from fleet_ray.actors.supervisor_store import Checkpointer, StoreGateway
from fleet_ray.control.state import FleetState
from fleet_ray.observe.hlc import HLC
from fleet_ray.observe.notify import NotifyConfig
from fleet_ray.testing import FakeClock, FakeSlotCalls, FakeWorkQueues, FlakyStore


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


class Rig:
    """One supervisor process over a store and a set of slot actors that outlive it."""

    def __init__(self, store: FlakyStore, clock: FakeClock, calls: FakeSlotCalls | None = None):
        self.store, self.clock = store, clock
        self.calls = calls or FakeSlotCalls()
        self.workqueues = FakeWorkQueues()
        state = FleetState(fleet_name="test")
        journal = EventJournal(HLC(clock.ms), clock=clock, monotonic=clock)
        gateway = StoreGateway("memory://", "test", opener=lambda url, ns: store, monotonic=clock)
        packages = PackageEnvs(self.calls, gateway, "test", monotonic=clock)
        self.services = FleetServices("test", state, journal, gateway, self.calls, notify=NotifyConfig())
        self.core = SupervisorCore(Parts(
            namespace="test", state=state, journal=journal, gateway=gateway,
            checkpointer=Checkpointer(state, journal, gateway, clock=clock, monotonic=clock),
            calls=self.calls, workqueues=self.workqueues, packages=packages,
            specs=SpecEditor(state, journal, self.workqueues, packages, on_applied=self.services.spec_applied,
                             clock=clock),
            recovery=StateRecovery(state, journal, gateway, self.calls, self.workqueues, clock=clock),
            services=self.services, records=StoreRecords(gateway, to_thread=_inline), clock=clock, pid=4242,
        ))

    def apply(self, spec: dict[str, Any]) -> Any:
        """What the actor does: wait for recovery (here: one step), then apply."""
        if not self.core.state.recovered:
            self.core.step()
        return asyncio.run(self.core.specs.apply(spec, _inline))

    def run(self, seconds: float, every: float = 0.5) -> None:
        """Step (and checkpoint) for ``seconds`` of fake time."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.core.step()
            self.core.checkpointer.persist_once()
            self.refresh_nodes()
            self.clock.advance(every)

    def refresh_nodes(self) -> None:
        """What the supervisor's node-list loop does beside the step (the node list, the GCS's word
        on slots that stopped answering)."""
        self.core.nodes = self.calls.nodes()
        self.calls.confirm()

    def status(self):
        return self.core.status()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.core.journal.recent]

    def close(self) -> None:
        self.services.reporter.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def rig(store, clock):
    rigs: list[Rig] = []

    def make(calls: FakeSlotCalls | None = None) -> Rig:
        r = Rig(store, clock, calls)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def echo(name: str = "web", slots: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": name, "automation": "builtin.echo", "slots": slots, **extra}
