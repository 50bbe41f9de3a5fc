"""The driver-side client: find a running fleet by name and talk to it.

::

    import fleet_ray

    fleet = fleet_ray.connect()                    # attaches to the local Ray cluster
    fleet.apply("examples/spec.yaml")
    print(fleet.status().pools[0].state)
    for r in fleet.submit("titles", urls).results():
        print(r.item_id, r.ok, r.value)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ray

from fleet_ray.api.status import FleetStatus
from fleet_ray.api.supervisor import EventQuery
from fleet_ray.client.items import ItemResult
from fleet_ray.client.jobs import Job
from fleet_ray.client.runs import Run
from fleet_ray.client.subscription import Subscription
from fleet_ray.errors import FleetNotRunning, JobError, SupervisorRecovering
from fleet_ray.names import SUPERVISOR_NAME
from fleet_ray.observe.kinds import typed
from fleet_ray.ray_boundary import get as _get
from fleet_ray.spec.discovery import resolve_pool
from fleet_ray.spec.models import FleetSpec, PoolSpec, ResolvedPool, load_spec_file, validate_spec
from fleet_ray.streams.declare import import_model
from fleet_ray.streams.sinks import parse_sink_spec

SUBMIT_CHUNK = 5_000


def _change(ref: Any) -> Any:
    """The answer to a change (apply, scale, pause, ...). Ray does not retry changes (a retry on a
    restarted supervisor could undo a later one), so a supervisor that died while handling one is
    :class:`~fleet_ray.errors.SupervisorRecovering`: it may or may not have been applied, and every
    change is safe to send again (the same spec or count gives the same desired state)."""
    try:
        return _get(ref)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        if isinstance(exc, ray.exceptions.RayTaskError):
            raise
        raise SupervisorRecovering(f"it restarted while handling this change ({type(exc).__name__}); "
                                   "the change may or may not have been applied", 1.0) from None


def _resolve_locally(pool: PoolSpec) -> ResolvedPool:
    """Resolve what this machine can: a packaged pool's code lives in its package, which the
    supervisor checks inside the package's runtime env."""
    if pool.package:
        return ResolvedPool(spec=pool, batch=False, distribution=None, installed_version=None)

    return resolve_pool(pool)


class FleetClient:
    def __init__(self, supervisor: Any, namespace: str):
        self.supervisor = supervisor
        self.namespace = namespace

    # -- desired state ---------------------------------------------------------------------------
    def apply(self, spec: FleetSpec | dict[str, Any] | str | Path) -> dict[str, Any]:
        """Validate locally (fast feedback), then have the supervisor validate and apply."""
        if isinstance(spec, str | Path):
            spec = load_spec_file(spec)
        validated, _ = validate_spec(spec, resolve=_resolve_locally)
        return _change(self.supervisor.apply.remote(validated.model_dump(mode="json"))).model_dump(mode="json")

    def scale(self, pool: str, slots: int) -> dict[str, Any]:
        return _change(self.supervisor.scale.remote(pool, slots)).model_dump(mode="json")

    def recycle(self, slot_id: str) -> dict[str, Any]:
        return _change(self.supervisor.recycle.remote(slot_id)).model_dump(mode="json")

    def pause(self, pool: str) -> dict[str, Any]:
        return _change(self.supervisor.set_paused.remote(pool, True)).model_dump(mode="json")

    def resume(self, pool: str) -> dict[str, Any]:
        return _change(self.supervisor.set_paused.remote(pool, False)).model_dump(mode="json")

    def pause_rollout(self, pool: str) -> dict[str, Any]:
        return _change(self.supervisor.pause_rollout.remote(pool)).model_dump(mode="json")

    def resume_rollout(self, pool: str) -> dict[str, Any]:
        return _change(self.supervisor.resume_rollout.remote(pool)).model_dump(mode="json")

    def rollback(self, pool: str) -> dict[str, Any]:
        return _change(self.supervisor.rollback.remote(pool)).model_dump(mode="json")

    def spec(self) -> dict[str, Any]:
        """The desired state the supervisor holds now."""
        return _get(self.supervisor.spec.remote()).model_dump(mode="json")

    def status(self) -> FleetStatus:
        return _get(self.supervisor.status.remote())

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        batch = _get(self.supervisor.events.remote(EventQuery(limit=limit)))
        return [e.model_dump(mode="json") for e in batch.events]

    def wait_until(self, predicate, timeout_s: float = 60, interval_s: float = 0.1) -> FleetStatus:
        """Poll status until ``predicate(status)`` holds; raises TimeoutError with the last status."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout_s}s; last status: {st.model_dump_json()}")
            time.sleep(interval_s)

    def wait_ready(self, timeout_s: float = 60) -> FleetStatus:
        """Wait until every pool runs exactly its desired slots."""
        return self.wait_until(
            lambda st: all(
                p.counts.get("running", 0) == p.desired and len(p.slots) == p.desired for p in st.pools
            ),
            timeout_s,
        )

    # -- batch work ------------------------------------------------------------------------------
    def submit(self, pool: str, items: Iterable[Any], job_id: str | None = None, ids: Iterable[str] | None = None,
               run_id: str | None = None, retry_failed: bool = False) -> Any:
        """Queue items for a batch pool; returns a :class:`Job` to follow.

        With ``run_id`` the job is a resumable run (:class:`fleet_ray.client.runs.Run`): results are
        recorded durably, and submitting the same run again processes only what is not done yet.
        Give stable ``ids`` when the item list may change order between attempts (default: position).
        Items are written to the store (durable pools) before this returns; submitting to an existing
        ``job_id`` adds only the item ids it does not hold yet. Re-attach later with :meth:`job`.
        """
        info = _get(self.supervisor.workqueue.remote(pool))
        wq = ray.get_actor(info.name, namespace=self.namespace)
        retries = info.max_item_retries
        items = list(items)
        id_list = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(items))]
        if len(id_list) != len(items):
            raise JobError("ids must have one entry per item")
        if run_id is not None:
            item_of = dict(zip(id_list, items, strict=True))
            if len(item_of) != len(items):
                raise JobError(f"run {run_id!r}: item ids must be unique")
            return Run(pool, run_id, _get, self.supervisor, wq, item_of, retries, retry_failed, SUBMIT_CHUNK)
        job = Job(pool, job_id or uuid.uuid4().hex[:12], wq, 0, resolve=lambda: self._workqueue(pool))
        for start in range(0, len(items), SUBMIT_CHUNK):
            job.submit(list(zip(id_list[start : start + SUBMIT_CHUNK], items[start : start + SUBMIT_CHUNK],
                                strict=True)), retries)
        return job

    def job(self, pool: str, job_id: str, cursor: int | None = None) -> Job:
        """Re-attach to a job by id (this driver restarted, or another one submitted it): a :class:`Job`
        that reads on from ``cursor``, by default the job's last acknowledged result (see
        :mod:`fleet_ray.client.jobs` for what the cursor means)."""
        wq = self._workqueue(pool)
        progress = _get(wq.progress.remote(job_id))
        if progress is None:
            raise JobError(f"job {job_id!r} is unknown to pool {pool!r} (never submitted, dropped, or finished "
                           "more than the pool's work_queue.finished_job_ttl_s ago)")
        return Job(pool, job_id, wq, progress["total"], resolve=lambda: self._workqueue(pool),
                   cursor=progress["cursor"] if cursor is None else cursor)

    def _workqueue(self, pool: str) -> Any:
        """The pool's work queue actor, found by name (the supervisor creates it if it is missing)."""
        info = _get(self.supervisor.workqueue.remote(pool))
        return ray.get_actor(info.name, namespace=self.namespace)

    def map(self, pool: str, items: Iterable[Any], timeout_s: float | None = None) -> list[ItemResult]:
        """Submit items and return their results in submission order."""
        items = list(items)
        job = self.submit(pool, items)
        by_id = {r.item_id: r for r in job.results(timeout_s=timeout_s)}
        return [by_id[str(i)] for i in range(len(items))]

    def run(self, pool: str, items: Iterable[Any], run_id: str, ids: Iterable[str] | None = None,
            timeout_s: float | None = None, retry_failed: bool = False) -> Any:
        """Run a resumable batch to the end; returns its :class:`fleet_ray.client.runs.RunReport`
        (``skipped``: items an earlier attempt of ``run_id`` already finished)."""
        return self.submit(pool, items, ids=ids, run_id=run_id, retry_failed=retry_failed).wait(timeout_s)

    # -- streams, events, crashes, grouped errors ------------------------------------------------
    def subscribe(self, stream: str, group: str | None = None, model: type | None = None, durable: bool = False,
                  start: str = "earliest") -> Any:
        """Read a stream (``"<pool>.<output>"``) as typed models (:class:`fleet_ray.client.subscription.Subscription`).

        ``model`` defaults to the producer's declared model, imported by its path here (pass it
        when the producer's package is not installed in the driver). ``group`` defaults to a group
        of its own (every item); drivers sharing a group split the items."""

        info = _get(self.supervisor.stream_info.remote(stream))
        hub = ray.get_actor(info.hub, namespace=self.namespace)
        return Subscription(hub, stream, group=group, model=model or import_model(info.model),
                            durable=durable, start=start, namespace=self.namespace)

    def streams(self) -> list[dict[str, Any]]:
        """Each stream's depth, bytes, capacity, in/out rates, blocked producers and group lag."""
        return [{**(s.hub or {"name": s.name}), "producer_pool": s.producer_pool, "consumer_pools": s.consumer_pools}
                for s in _get(self.supervisor.streams.remote())]

    def add_sink(self, stream: str, spec: Any, name: str = "default") -> dict[str, Any]:
        """Copy ``stream`` into a sink (``JsonlSinkSpec`` / ``RedisSinkSpec`` or their dicts) by a sink actor."""

        return _get(self.supervisor.add_sink.remote(stream, parse_sink_spec(spec).model_dump(), name)).model_dump()

    def follow_events(self, kinds: list[str] | None = None, pool: str | None = None,
                      timeout_s: float | None = None, after: list | None = None) -> Iterator[Any]:
        """Live events (after cursor ``after``, default: from now on), each as its typed model
        (:mod:`fleet_ray.observe.kinds`). ``event_cursor()`` gives a cursor for "now"."""

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        cursor = after
        while deadline is None or time.monotonic() < deadline:
            wait = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
            query = EventQuery(after=tuple(cursor) if cursor else None, kinds=kinds, pool=pool, wait_s=wait, limit=0)
            page = _get(self.supervisor.events.remote(query), timeout=wait + 60)
            cursor = list(page.cursor) if page.cursor else None
            for e in page.events:
                yield typed(e.model_dump(mode="json"))

    def event_cursor(self) -> list | None:
        """A cursor at the newest event, for :meth:`follow_events` (``after=``)."""
        cursor = _get(self.supervisor.events.remote(EventQuery(wait_s=0, limit=0))).cursor
        return list(cursor) if cursor else None

    def error_groups(self, pool: str | None = None) -> list[dict[str, Any]]:
        return [g.model_dump(mode="json") for g in _get(self.supervisor.error_groups.remote(pool))]

    def crashes(self, pool: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in _get(self.supervisor.crashes.remote(pool, limit))]

    def configure_notifiers(self, config: dict[str, Any]) -> dict[str, Any]:
        """Webhook / Telegram error notifications (fleet_ray.observe.notify.NotifyConfig); returns them without secrets."""
        return _get(self.supervisor.configure_notifiers.remote(config)).model_dump()

    def down(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Remove every slot, the work queues, the checkpoint and the supervisor itself."""
        result = _get(self.supervisor.shutdown.remote(timeout_s), timeout=timeout_s + 60)
        ray.kill(self.supervisor, no_restart=True)
        return result.model_dump()


def init_ray(address: str | None = None, namespace: str = "fleet", **kwargs: Any) -> None:
    if not ray.is_initialized():
        ray.init(
            address=address or "auto",
            namespace=namespace,
            logging_level="WARNING",
            log_to_driver=kwargs.pop("log_to_driver", False),
            **kwargs,
        )


def connect(address: str | None = None, namespace: str = "fleet") -> FleetClient:
    """Attach to a Ray cluster (``address``, default: the local one) and find the fleet's supervisor."""
    try:
        init_ray(address, namespace)
    except ConnectionError as exc:
        raise FleetNotRunning(f"no Ray cluster at {address or 'auto'}: run `fleet-ray up` first ({exc})") from None
    try:
        handle = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
    except ValueError:
        raise FleetNotRunning(
            f"no fleet supervisor in Ray namespace {namespace!r}: run `fleet-ray up` first"
        ) from None
    return FleetClient(handle, namespace)
