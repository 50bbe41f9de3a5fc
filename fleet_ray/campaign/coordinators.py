"""The workflow coordinators a campaign offers. Tasks are ``task(ctx, item)`` (see
:class:`~fleet_ray.campaign.member.MemberContext`); each coordinator returns one
:class:`~fleet_ray.campaign.results.MemberResult` per member (or per target), never raising for
one member's failure.

- :meth:`broadcast` — the same task on every member;
- :meth:`plan` — ``planner(index, identity)`` gives each member its own item;
- :meth:`pipeline` — stage k's output is stage k+1's input, per member, as soon as it is ready;
  a member that fails a stage stops there and its failure (with the stage) is its result;
- :meth:`race` — first success (optionally: first value meeting ``goal``) wins; every sibling is
  cancelled and its late result suppressed, so there is exactly one winner;
- :meth:`map_targets` — each target once, on whichever member is free; after ``resume=True``
  only the targets without a completion receipt run.

An item that is a dict with a ``"target"`` key (URL or host) makes the operation guarded on that
target: policy, breaker and a rate-limit slot before the task runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fleet_ray.campaign.config import MemberIdentity, target_host
from fleet_ray.campaign.engine import CoordinatorRun, Work
from fleet_ray.campaign.results import MemberResult
from fleet_ray.errors import CampaignConfigError

Task = Callable[[Any, Any], Any]
Planner = Callable[[int, MemberIdentity], Any]


def _target_of(item: Any, where: str) -> str | None:
    if isinstance(item, dict) and "target" in item:
        ref = item["target"]
        try:
            target_host(str(ref))
        except ValueError as exc:
            raise CampaignConfigError([{"loc": where, "msg": str(exc)}]) from None
        return str(ref)
    return None


class Coordinators:
    """Mixed into :class:`~fleet_ray.campaign.campaign.Campaign`."""

    config: Any
    executor: Any
    done_targets: dict[str, dict[str, Any]]

    def _check_open(self) -> None: ...  # pragma: no cover - provided by Campaign
    def _begin_run(self) -> None: ...  # pragma: no cover
    def _end_run(self) -> None: ...  # pragma: no cover
    def identity(self, member: int | None) -> str: ...  # pragma: no cover

    def _run(self, coordinator: str, works: list[Work], goal=None, follow=None) -> dict[Any, MemberResult]:
        self._begin_run()
        try:
            return CoordinatorRun(self, coordinator, goal, follow).execute(works)
        finally:
            self._end_run()

    def _planned(self, planner: Planner | None, item: Any, fn: Any, coordinator: str) -> list[Work]:
        works = []
        for i, ident in enumerate(self.config.members):
            value = planner(i, ident) if planner is not None else item
            works.append(Work(key=i, fn=fn, member=i, input=value, target_ref=_target_of(value, f"{coordinator}[{i}]")))
        return works

    def _ordered(self, results: dict[Any, MemberResult]) -> list[MemberResult]:
        return [results[k] for k in sorted(results)]

    def broadcast(self, task: Task, item: Any = None) -> list[MemberResult]:
        """Run ``task(ctx, item)`` on every member in parallel (within ``active_concurrency``)."""
        self._check_open()
        fn = self.executor.register(task)
        return self._ordered(self._run("broadcast", self._planned(None, item, fn, "broadcast")))

    def plan(self, planner: Planner, task: Task) -> list[MemberResult]:
        """``planner(index, identity)`` → each member's item; then ``task(ctx, item)`` per member."""
        self._check_open()
        fn = self.executor.register(task)
        return self._ordered(self._run("plan", self._planned(planner, None, fn, "plan")))

    def pipeline(self, stages: Sequence[Task], item: Any = None, planner: Planner | None = None
                 ) -> list[MemberResult]:
        """Per member: ``stages[0](ctx, item)`` → ``stages[1](ctx, out0)`` → … A failed stage ends the
        member's pipeline with that failure (``result.stage`` says which); later stages never see it."""
        if not stages:
            raise CampaignConfigError([{"loc": "pipeline.stages", "msg": "give at least one stage"}])
        self._check_open()
        fns = [self.executor.register(s) for s in stages]
        works = self._planned(planner, item, fns[0], "pipeline")
        for w in works:
            w.stage = 0

        def follow(w: Work, res: MemberResult) -> Work | None:
            nxt = (w.stage or 0) + 1
            if nxt >= len(fns):
                return None
            return Work(key=w.key, fn=fns[nxt], member=w.member, input=res.value, stage=nxt,
                        target_ref=w.target_ref)

        return self._ordered(self._run("pipeline", works, follow=follow))

    def race(self, task: Task, goal: Callable[[Any], bool] | None = None, item: Any = None,
             planner: Planner | None = None) -> list[MemberResult]:
        """All members try; the first success whose value meets ``goal`` (default: any success) wins.
        The winner's result has ``winner=True``. The others are cancelled (``ctx.cancelled`` turns
        true, queued ones never start) and anything they return afterwards is suppressed
        (``cancelled=True``, ``suppressed=True`` when it was a late success): one winner, no duplicate
        reports. Members that finished *before* the winner without meeting ``goal`` keep their result."""
        self._check_open()
        fn = self.executor.register(task)
        return self._ordered(self._run("race", self._planned(planner, item, fn, "race"), goal=goal))

    def outstanding(self, targets: Sequence[str]) -> list[str]:
        """The targets with no completion receipt in the durable log (all of them for a new campaign)."""
        return [t for t in targets if t not in self.done_targets]

    def map_targets(self, task: Task, targets: Sequence[str]) -> list[MemberResult]:
        """``task(ctx, target)`` once per target on any free member, guarded on that target. With
        ``resume=True`` targets completed by an earlier run come back from the log (``resumed=True``)."""
        for i, t in enumerate(targets):
            _target_of({"target": t}, f"targets[{i}]")
        self._check_open()
        fn = self.executor.register(task)
        works, results = [], {}
        for i, t in enumerate(targets):
            done = self.done_targets.get(t)
            if done is not None:
                results[i] = MemberResult(
                    member=done.get("member", -1), identity=done.get("identity", "-"), ok=True,
                    value=done.get("value"), target=t, resumed=True, node=done.get("node"), op_id=done.get("op_id"))
            else:
                works.append(Work(key=i, fn=fn, member=None, input=t, target_ref=t))
        results.update(self._run("map_targets", works))
        return self._ordered(results)
