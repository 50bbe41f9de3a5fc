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


# -- crash bridge, resumable runs (fleet_ray.observe.crashes, fleet_ray.client.runs) ------------------------------
CRASH_LOG = "crashes"  # one entry per crashed slot generation, id = "<pool>:<index>:g<generation>"


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
