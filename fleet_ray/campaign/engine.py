"""The coordinators' dispatch loop, independent of where members run (no Ray here).

One :class:`CoordinatorRun` per coordinator call (not a resumable fleet run, which is
:class:`fleet_ray.client.runs.Run`): it hands work to free members while the campaign-wide
``active_concurrency`` allows, settles outcomes as they land (receipts, counters, proxy health,
breaker notifications — all through the campaign), feeds follow-up work (the next pipeline stage)
and, for races, cancels the siblings of the first member to reach the goal. A member runs one
operation at a time. Executors run :class:`~fleet_ray.campaign.results.OpSpec` somewhere:
:class:`LocalExecutor` in a thread pool, :class:`fleet_ray.actors.campaign_workers.RayExecutor` on
worker actors across nodes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fleet_ray.campaign.member import MemberRuntime
from fleet_ray.campaign.results import MemberResult, OpOutcome, OpSpec, failure
from fleet_ray.errors import CampaignClosed, MemberCancelled

log = logging.getLogger(__name__)


@dataclass
class Work:
    key: Any  # where the result goes (member index, or target position)
    fn: Any  # the executor's handle of the task function
    member: int | None = None  # None: any free member
    input: Any = None
    stage: int | None = None
    target_ref: str | None = None


class Executor(Protocol):
    def register(self, fn: Callable) -> Any: ...
    def submit(self, spec: OpSpec, fn: Any) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, OpOutcome]]: ...
    def cancel(self, specs: list[OpSpec]) -> None: ...
    def nodes(self) -> list[str]: ...
    def shutdown(self) -> None: ...


class LocalExecutor:
    """Members as threads of the driver process, sharing one :class:`MemberRuntime`."""

    def __init__(self, runtime: MemberRuntime, threads: int):
        self.runtime = runtime
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="campaign-member")
        self._specs: dict[cf.Future, OpSpec] = {}

    def register(self, fn: Callable) -> Any:
        return fn

    def submit(self, spec: OpSpec, fn: Any) -> Any:
        fut = self._pool.submit(self.runtime.run, spec, fn)
        self._specs[fut] = spec
        return fut

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, OpOutcome]]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for fut in done:
            spec = self._specs.pop(fut)
            try:
                out.append((fut, fut.result()))
            except Exception as exc:  # run() catches task errors; this is the runtime failing
                out.append((fut, failure(spec, exc)))
        return out

    def cancel(self, specs: list[OpSpec]) -> None:
        self.runtime.cancel([s.op_id for s in specs])

    def nodes(self) -> list[str]:
        return [self.runtime.node]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self.runtime.close()


class CoordinatorRun:
    """One coordinator call. ``host`` is the :class:`~fleet_ray.campaign.campaign.Campaign`."""

    def __init__(self, host: Any, coordinator: str, goal: Callable[[Any], bool] | None = None,
                 follow: Callable[[Work, MemberResult], Work | None] | None = None):
        self.host = host
        self.coordinator = coordinator
        self.race = coordinator == "race"
        self.goal = goal
        self.follow = follow
        self.results: dict[Any, MemberResult] = {}
        self.winner: MemberResult | None = None

    def execute(self, works: list[Work]) -> dict[Any, MemberResult]:
        host = self.host
        queue: deque[Work] = deque(works)
        waiting: dict[int, deque[Work]] = defaultdict(deque)  # pinned work whose member is busy
        inflight: dict[Any, tuple[Work, OpSpec]] = {}
        grace_until: float | None = None
        while True:
            if self.winner is None:
                self._dispatch(queue, waiting, inflight)
            if not inflight:
                if not queue and not any(waiting.values()):
                    break
                if self.winner is not None or host.closing:
                    self._drop(queue, waiting)
                    continue
                for q in waiting.values():  # their members may have been freed by another call
                    queue.extend(q)
                waiting.clear()
                host.idle_wait(0.02)  # slots or members are held by another coordinator call
                continue
            if grace_until is not None and time.monotonic() > grace_until:
                # siblings that ignore cancellation: their members stay busy until they stop, and
                # whatever they return is dropped (destroy() still waits for them)
                host.orphan([(handle, spec) for handle, (_, spec) in inflight.items()])
                for w, spec in inflight.values():
                    self.results[w.key] = host.refused(w, spec.member, self.coordinator,
                                                       MemberCancelled(spec.member, "race lost; still stopping"))
                break
            for handle, outcome in host.executor.wait(list(inflight), 0.5 if grace_until is None else 0.05):
                w, spec = inflight.pop(handle)
                host.release_member(spec.member)
                if waiting.get(spec.member):
                    queue.appendleft(waiting[spec.member].popleft())
                if self.winner is not None:  # a race sibling: whatever it returned, it lost
                    res = host.settle(outcome, w, spec, self.coordinator, lost_race=True)
                    self.results[w.key] = res
                    continue
                res = host.settle(outcome, w, spec, self.coordinator)
                if self.race and res.ok and (self.goal is None or self._reached(res)):
                    res.winner = True
                    self.winner = res
                    self.results[w.key] = res
                    host.race_won(res, self.coordinator)
                    host.executor.cancel([s for _, s in inflight.values()])
                    self._drop(queue, waiting)
                    grace_until = time.monotonic() + host.config.cancel_grace_s
                    continue
                nxt = self.follow(w, res) if (self.follow is not None and res.ok) else None
                if nxt is not None:
                    queue.appendleft(nxt)
                else:
                    self.results[w.key] = res
            host.flush(wait=False)
        host.flush()  # when a coordinator returns, its receipts are durable
        return self.results

    def _reached(self, res: MemberResult) -> bool:
        try:
            return bool(self.goal(res.value))  # type: ignore[misc]
        except Exception:
            log.exception("race goal raised for member %s; treating as not reached", res.member)
            return False

    def _dispatch(self, queue: deque[Work], waiting: dict[int, deque[Work]], inflight: dict) -> None:
        host = self.host
        while queue:
            if host.closing:
                self._drop(queue, waiting)
                return
            w = queue[0]
            member = host.take_member(w.member)
            if member is None:
                if w.member is None:
                    return  # every member is busy: wait for one
                waiting[w.member].append(queue.popleft())
                continue
            if not host.take_slot():
                host.release_member(member, slot=False)
                return
            queue.popleft()
            spec, refused = host.prepare(w, member, self.coordinator)
            if refused is not None:
                host.release_member(member)
                self.results[w.key] = refused
                continue
            inflight[host.executor.submit(spec, w.fn)] = (w, spec)

    def _drop(self, queue: deque[Work], waiting: dict[int, deque[Work]]) -> None:
        """Work that will never be dispatched: cancelled (race won) or refused (campaign closing)."""
        rest = list(queue) + [w for q in waiting.values() for w in q]
        queue.clear()
        waiting.clear()
        for w in rest:
            if self.winner is not None:
                exc: Exception = MemberCancelled(w.member if w.member is not None else -1,
                                                 f"race won by member {self.winner.member}; never started")
            else:
                exc = CampaignClosed(self.host.campaign_id)
            self.results[w.key] = self.host.refused(w, w.member, self.coordinator, exc)
