"""Resumable batch runs: completions are recorded durably, a rerun processes only the rest.

::

    report = fleet.run("prices", items, run_id="prices-2026-11-23", ids=skus)
    report.skipped      # items already done by an earlier (killed) attempt of this run

A run is a batch job whose id is the ``run_id`` the driver chooses. Its ledger lives in the store
(:class:`RunLedger`): every result is recorded (idempotently, by item id) **before** the driver
sees it, and item ids are recorded as submitted before they are queued. Starting the same run
again — after the driver, the supervisor, or everything was killed — plans (:func:`plan_resume`):

- items with a recorded result are **skipped** (their recorded result stands: no duplicate output);
- items still queued or in flight in the pool's work queue (it survives a driver and a supervisor
  restart) are **adopted**: the rerun follows them instead of queueing them twice;
- everything else is **submitted** again.

One driver per run at a time. Results that slots finished while no driver was recording them are
picked up from the surviving work queue; only if the work queue was lost too are they processed
again (at-least-once), and their output still lands once in the ledger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.client.items import ItemResult
from fleet_ray.errors import JobError
from fleet_ray.store import keys
from fleet_ray.store.base import LogEntry, Store


class RunRecord(ItemResult):
    """An item's result as the run ledger keeps it: the result plus when it was recorded."""

    at: float = Field(default_factory=time.time)


class RunState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: list[str] = Field(default_factory=list, description="Items with a successful result.")
    failed: list[str] = Field(default_factory=list, description="Items that failed for good (and never succeeded).")
    submitted: list[str] = Field(default_factory=list, description="Item ids in submission order.")


class RunReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    pool: str
    total: int = Field(description="Items in the run.")
    skipped: int = Field(description="Already done before this attempt began (not processed again).")
    adopted: int = Field(0, description="Still queued or in flight from an earlier attempt; followed, not re-queued.")
    submitted: int = Field(0, description="Queued by this attempt.")
    done: int = Field(0, description="Finished successfully during this attempt.")
    failed: int = Field(0, description="Failed for good during this attempt.")
    duration_s: float = 0.0


class RunLedger:
    """A run's durable record on a :class:`~fleet_ray.store.base.Store`."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.run_id = run_id
        self._done = keys.run_done(run_id)
        self._submitted = keys.run_submitted(run_id)

    def record(self, records: list[RunRecord]) -> int:
        """Record results; an item's success is recorded once, a failure once. Returns how many were new."""
        entries = [
            LogEntry(f"{'ok' if r.ok else 'failed'}:{r.item_id}", f"{int(r.at * 1e6):020d}", r.model_dump_json().encode())
            for r in records
        ]
        return self.store.log_append(self._done, entries) if entries else 0

    def state(self) -> RunState:
        ok, failed = [], []
        for e in self.store.log_range(self._done):
            kind, _, item = e.id.partition(":")
            (ok if kind == "ok" else failed).append(item)
        ok_set = set(ok)
        return RunState(ok=ok, failed=[i for i in failed if i not in ok_set],
                        submitted=[e.id for e in self.store.log_range(self._submitted)])

    def mark_submitted(self, ids: list[str], keep_first: int | None = None) -> int:
        """Record ``ids`` as submitted after the first ``keep_first`` recorded ones (the items the
        surviving job holds; None: no job survives, start over). Marks beyond them were never queued."""
        current = [e.id for e in self.store.log_range(self._submitted)]
        keep = current[: keep_first or 0]
        if len(current) != len(keep):
            self.store.log_trim(self._submitted, 0)
            self.store.log_append(self._submitted, [LogEntry(i, f"{n:012d}", b"") for n, i in enumerate(keep)])
        start = len(keep)
        return self.store.log_append(self._submitted, [LogEntry(i, f"{start + n:012d}", b"") for n, i in enumerate(ids)])

    def results(self) -> list[RunRecord]:
        """Every item's recorded result, once (a success wins over an earlier failure)."""
        by_item: dict[str, RunRecord] = {}
        for e in self.store.log_range(self._done):
            rec = RunRecord.model_validate(json.loads(e.data))
            if rec.item_id not in by_item or rec.ok:
                by_item[rec.item_id] = rec
        return list(by_item.values())


@dataclass
class ResumePlan:
    skipped: list[str]
    adopted: list[str]
    submit: list[str]
    keep_submitted: int | None  # how many recorded submissions the surviving job holds


def plan_resume(ids: list[str], state: RunState, job_total: int | None, retry_failed: bool = False) -> ResumePlan:
    """What a (re)started run does with each item. ``job_total``: items the surviving work-queue job
    holds (None if there is none); they are the first ``job_total`` submitted ids."""
    done = set(state.ok) if retry_failed else set(state.ok) | set(state.failed)
    skipped = [i for i in ids if i in done]
    if job_total is None:
        return ResumePlan(skipped, [], [i for i in ids if i not in done], keep_submitted=None)
    in_job = set(state.submitted[:job_total])
    adopted = [i for i in ids if i not in done and i in in_job]
    submit = [i for i in ids if i not in done and i not in in_job]
    return ResumePlan(skipped, adopted, submit, keep_submitted=job_total)


class Run:
    """A resumable run as the driver follows it (made by ``FleetClient.submit(..., run_id=...)``)."""

    def __init__(self, pool: str, run_id: str, call: Callable[..., Any], supervisor: Any, workqueue: Any,
                 item_of: dict[str, Any], max_retries: int, retry_failed: bool = False, chunk: int = 5_000):
        self.pool = pool
        self.id = run_id
        self._call = call
        self._sup = supervisor
        self._wq = workqueue
        self._t0 = time.monotonic()
        progress = call(workqueue.progress.remote(run_id))
        state = RunState.model_validate(call(supervisor.run_state.remote(run_id)))
        job_total = progress["total"] if progress else None
        if retry_failed and progress and progress["done"] + progress["failed"] < progress["total"]:
            raise JobError(f"run {run_id!r} is still in progress; retry_failed needs it finished first")
        if retry_failed and progress:
            call(workqueue.drop.remote(run_id))
            job_total = None
        plan = plan_resume(list(item_of), state, job_total, retry_failed)
        self.total = len(item_of)
        self.skipped = len(plan.skipped)
        self.adopted = len(plan.adopted)
        self._expected = set(plan.adopted) | set(plan.submit)
        self._finished: set[str] = set()
        self.done = self.failed = 0
        self._cursor = 0
        if plan.submit:
            call(supervisor.run_mark_submitted.remote(run_id, plan.submit, plan.keep_submitted))
            for start in range(0, len(plan.submit), chunk):
                part = plan.submit[start : start + chunk]
                call(workqueue.submit.remote(run_id, [(i, item_of[i]) for i in part], max_retries))
        self.submitted = len(plan.submit)
        if state.ok or state.failed or plan.adopted:
            call(supervisor.run_resumed.remote(pool, run_id, self.total, self.skipped, self.adopted, self.submitted))

    def results(self, timeout_s: float | None = None, poll_s: float = 1.0) -> Iterator[ItemResult]:
        """Yield each result of this attempt once, after it was recorded durably."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._expected - self._finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id}: {len(self._finished)}/{len(self._expected)} results after {timeout_s}s")
            reply = self._call(self._wq.fetch.remote(self.id, self._cursor, 10_000, poll_s), timeout=poll_s + 60)
            if reply["progress"] is None:
                raise JobError(f"run {self.id} is unknown to pool {self.pool!r}: start the run again to resume it")
            self._cursor = reply["cursor"]
            fresh = [r for r in reply["results"] if r[0] in self._expected and r[0] not in self._finished]
            if not fresh:
                continue
            records = [RunRecord(item_id=i, ok=ok, value=v if ok else None, error=None if ok else str(v), attempts=a)
                       for i, ok, v, a in fresh]
            self._call(self._sup.run_record.remote(self.id, [r.model_dump(mode="json") for r in records]))
            for r in records:
                self._finished.add(r.item_id)
                if r.ok:
                    self.done += 1
                else:
                    self.failed += 1
                yield ItemResult(item_id=r.item_id, ok=r.ok, value=r.value, error=r.error, attempts=r.attempts)

    def wait(self, timeout_s: float | None = None) -> RunReport:
        for _ in self.results(timeout_s=timeout_s):
            pass
        return self.report()

    def report(self) -> RunReport:
        return RunReport(run_id=self.id, pool=self.pool, total=self.total, skipped=self.skipped, adopted=self.adopted,
                         submitted=self.submitted, done=self.done, failed=self.failed,
                         duration_s=round(time.monotonic() - self._t0, 3))

    def all_results(self) -> list[RunRecord]:
        """Every item's recorded result (this and earlier attempts), each item once."""
        return [RunRecord.model_validate(r) for r in self._call(self._sup.run_results.remote(self.id))]
