"""Every store key fleet-ray writes, named in one place.

Keys are relative; each store prefixes them with its namespace (``fleet:<namespace>:`` in Redis,
a table per namespace in SQLite), so two fleets can share one Redis.
"""

SUPERVISOR_CHECKPOINT = "supervisor:checkpoint"
SUPERVISOR_EPOCH = "supervisor:epoch"  # incremented by every recovery; never deleted (not even by `down`)
EVENT_LOG = "events"
AUDIT_LOG = "audit"  # campaigns' signed receipts (fleet_ray.observe.events.EventLog reads both as one); never trimmed


def generation(pool: str, index: int) -> str:
    """The last generation handed out for one slot position (monotonic, never regresses)."""
    return f"gen:{pool}:{index}"


def job(job_id: str) -> str:
    return f"job:{job_id}"


def job_done(job_id: str) -> str:
    return f"job:{job_id}:done"


# -- durable work queues (fleet_ray.store.work_log; SQLite keeps them in tables of the same file) -----------
WORK_PREFIX = "work:"


def work_jobs(pool: str) -> str:
    """Hash: job id → the job's meta (JSON) in a pool's work queue."""
    return f"{WORK_PREFIX}{pool}:jobs"


def work_items(pool: str) -> str:
    """Hash: ``<job>\\0<item>`` → an item that has no result yet (queued or leased)."""
    return f"{WORK_PREFIX}{pool}:items"


def work_leases(pool: str) -> str:
    """Hash: ``<job>\\0<item>`` → the lease record (lessee, deadline) of a leased item."""
    return f"{WORK_PREFIX}{pool}:leases"


def work_results(pool: str, job_id: str) -> str:
    """Sorted set: a job's results not yet read by its driver, scored by sequence number."""
    return f"{WORK_PREFIX}{pool}:results:{job_id}"


# -- crash bridge, resumable runs (fleet_ray.observe.crashes, fleet_ray.client.runs) ------------------------------
CRASH_LOG = "crashes"  # one entry per crashed slot generation, id = "<pool>:<index>:g<generation>@<run>"


def slot_context(pool: str, index: int, generation: int) -> str:
    """What a slot generation is doing now (task, phase) and its last fatal error, written as it goes."""
    return f"slotctx:{pool}:{index}:g{generation}"


SLOT_CONTEXT_PREFIX = "slotctx:"


def run_done(run_id: str) -> str:
    """Log of a run's finished items (id = ``ok:<item>`` or ``failed:<item>``)."""
    return f"run:{run_id}:done"


def run_submitted(run_id: str) -> str:
    """Log of a run's submitted item ids, in submission order."""
    return f"run:{run_id}:submitted"


def package(name: str, version: str) -> str:
    """A published automation wheel (its bytes), as ``fleet-ray publish`` stored it."""
    return f"package:{canonical(name)}=={version}"


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# -- durable streams (fleet_ray.store.redis_stream_log; SQLite keeps them in tables of the same file) ---------
def stream_batches(stream: str) -> str:
    """The Redis Stream of a fleet stream's retained batches (entry id ``<index>-1``)."""
    return f"stream:{stream}:batches"


def stream_groups(stream: str) -> str:
    """Hash: consumer group → its acknowledged position (JSON)."""
    return f"stream:{stream}:groups"


def stream_producers(stream: str) -> str:
    """Hash: producer → the last sequence number the stream accepted from it."""
    return f"stream:{stream}:producers"


def stream_meta(stream: str) -> str:
    """Hash: ``next`` (the next batch index) and ``items_in`` (items ever accepted)."""
    return f"stream:{stream}:meta"


STREAM_SINK_PREFIX = "sinks:"


def stream_sink(stream: str, name: str) -> str:
    """A sink the supervisor started (its spec, JSON), so a restarted head starts it again."""
    return f"{STREAM_SINK_PREFIX}{stream}:{name}"
