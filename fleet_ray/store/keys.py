"""Every store key fleet-ray writes, named in one place.

Keys are relative; each store prefixes them with its namespace (``fleet:<namespace>:`` in Redis,
a table per namespace in SQLite), so two fleets can share one Redis.
"""

SUPERVISOR_CHECKPOINT = "supervisor:checkpoint"
EVENT_LOG = "events"


def generation(pool: str, index: int) -> str:
    """The last generation handed out for one slot position (monotonic, never regresses)."""
    return f"gen:{pool}:{index}"


def job(job_id: str) -> str:
    return f"job:{job_id}"


def job_done(job_id: str) -> str:
    return f"job:{job_id}:done"
