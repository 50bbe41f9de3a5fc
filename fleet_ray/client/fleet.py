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
from fleet_ray.client.runs import Run
from fleet_ray.errors import FleetNotRunning, JobError
from fleet_ray.names import SUPERVISOR_NAME
from fleet_ray.ray_boundary import get as _get
from fleet_ray.spec.models import FleetSpec, PoolSpec, ResolvedPool, load_spec_file, validate_spec

SUBMIT_CHUNK = 5_000


def _resolve_locally(pool: PoolSpec) -> ResolvedPool:
    """Resolve what this machine can: a packaged pool's code lives in its package, which the
    supervisor checks inside the package's runtime env."""
    if pool.package:
        return ResolvedPool(spec=pool, batch=False, distribution=None, installed_version=None)
    from fleet_ray.spec.discovery import resolve_pool

    return resolve_pool(pool)


class Job:
    """A batch of items submitted to a pool. Iterate :meth:`results` or call :meth:`wait`."""

    def __init__(self, pool: str, job_id: str, workqueue: Any, total: int):
        self.pool = pool
        self.id = job_id
        self._wq = workqueue
        self.total = total
        self._cursor = 0
        self.done = 0
        self.failed = 0

    def progress(self) -> dict[str, Any]:
        return _get(self._wq.progress.remote(self.id)) or {}

    def results(self, timeout_s: float | None = None, poll_s: float = 1.0) -> Iterator[ItemResult]:
        """Yield each item's result as it lands, until every item has one (or the timeout passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.done + self.failed < self.total:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id}: {self.done + self.failed}/{self.total} results after {timeout_s}s")
            reply = _get(self._wq.fetch.remote(self.id, self._cursor, 10_000, poll_s), timeout=poll_s + 60)
            if reply["progress"] is None:
                raise JobError(f"job {self.id} is unknown to pool {self.pool!r} (its work queue restarted?)")
            self._cursor = reply["cursor"]
            for item_id, ok, value, attempts in reply["results"]:
                if ok:
                    self.done += 1
                    yield ItemResult(item_id=item_id, ok=True, value=value, attempts=attempts)
                else:
                    self.failed += 1
                    yield ItemResult(item_id=item_id, ok=False, error=str(value), attempts=attempts)

    def wait(self, timeout_s: float | None = None) -> list[ItemResult]:
        return list(self.results(timeout_s=timeout_s))

    def drop(self) -> None:
        _get(self._wq.drop.remote(self.id))


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
        return _get(self.supervisor.apply.remote(validated.model_dump(mode="json"))).model_dump(mode="json")

    def scale(self, pool: str, slots: int) -> dict[str, Any]:
        return _get(self.supervisor.scale.remote(pool, slots)).model_dump(mode="json")

    def recycle(self, slot_id: str) -> dict[str, Any]:
        return _get(self.supervisor.recycle.remote(slot_id)).model_dump(mode="json")

    def pause(self, pool: str) -> dict[str, Any]:
        return _get(self.supervisor.set_paused.remote(pool, True)).model_dump(mode="json")

    def resume(self, pool: str) -> dict[str, Any]:
        return _get(self.supervisor.set_paused.remote(pool, False)).model_dump(mode="json")

    def pause_rollout(self, pool: str) -> dict[str, Any]:
        return _get(self.supervisor.pause_rollout.remote(pool)).model_dump(mode="json")

    def resume_rollout(self, pool: str) -> dict[str, Any]:
        return _get(self.supervisor.resume_rollout.remote(pool)).model_dump(mode="json")

    def rollback(self, pool: str) -> dict[str, Any]:
        return _get(self.supervisor.rollback.remote(pool)).model_dump(mode="json")

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
        job_id = job_id or uuid.uuid4().hex[:12]
        total = 0
        for start in range(0, len(items), SUBMIT_CHUNK):
            chunk = list(zip(id_list[start : start + SUBMIT_CHUNK], items[start : start + SUBMIT_CHUNK], strict=True))
            total = _get(wq.submit.remote(job_id, chunk, retries))
        if not items:
            total = 0
        return Job(pool, job_id, wq, total)

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
        from fleet_ray.client.subscription import Subscription
        from fleet_ray.streams.declare import import_model

        info = _get(self.supervisor.stream_info.remote(stream))
        hub = ray.get_actor(info.hub, namespace=self.namespace)
        return Subscription(hub, stream, group=group, model=model or import_model(info.model),
                            durable=durable, start=start)

    def streams(self) -> list[dict[str, Any]]:
        """Each stream's depth, bytes, capacity, in/out rates, blocked producers and group lag."""
        return [{**(s.hub or {"name": s.name}), "producer_pool": s.producer_pool, "consumer_pools": s.consumer_pools}
                for s in _get(self.supervisor.streams.remote())]

    def add_sink(self, stream: str, spec: Any, name: str = "default") -> dict[str, Any]:
        """Copy ``stream`` into a sink (``JsonlSinkSpec`` / ``RedisSinkSpec`` or their dicts) by a sink actor."""
        from fleet_ray.streams.sinks import parse_sink_spec

        return _get(self.supervisor.add_sink.remote(stream, parse_sink_spec(spec).model_dump(), name)).model_dump()

    def follow_events(self, kinds: list[str] | None = None, pool: str | None = None,
                      timeout_s: float | None = None, after: list | None = None) -> Iterator[Any]:
        """Live events (after cursor ``after``, default: from now on), each as its typed model
        (:mod:`fleet_ray.observe.kinds`). ``event_cursor()`` gives a cursor for "now"."""
        from fleet_ray.observe.kinds import typed

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
