"""The Ray boundary: one translator for what comes back from a remote call, one ``get``.

A remote method that raises reaches the caller as a ``RayTaskError`` wrapping the real exception; an
actor that died or can't be reached raises ``RayActorError`` / ``ActorUnavailableError``. Callers of the
fleet want the real :class:`~fleet_ray.errors.FleetError` (a bad spec, an unknown pool) as itself, and a
short readable line for anything else — so every caller goes through :func:`ray_errors`,
:func:`short_cause` and :func:`get` instead of unwrapping ``.cause`` by hand.

Ray is imported inside the functions: this module is importable (and its pure helpers usable) where Ray
is not, as the design asks of everything in ``fleet_ray`` outside the client and the store.
"""

from __future__ import annotations

from typing import Any

from fleet_ray.errors import FleetError
from fleet_ray.redact import redact_url


def task_cause(exc: BaseException) -> BaseException:
    """The exception a remote method raised (``RayTaskError.cause``), or ``exc`` itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def ray_errors(exc: BaseException) -> BaseException:
    """What a caller should see for ``exc``: the FleetError inside a task error, else ``exc``."""
    cause = task_cause(exc)
    return cause if isinstance(cause, FleetError) else exc


def short_cause(exc: BaseException) -> str:
    """One readable line for an error that came back from a remote call: the first non-empty line,
    secrets redacted (:mod:`fleet_ray.redact`), at most 500 characters. Status and events show no more
    of an error than this (the full text is the crash record's)."""
    cause = task_cause(exc)
    shown = cause if cause is not exc else exc
    text = str(shown).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return redact_url(f"{type(shown).__name__}: {first}" if first else type(shown).__name__)[:500]


def is_actor_death(exc: BaseException) -> bool:
    """True when ``exc`` says the actor itself is gone (not that one of its methods raised)."""
    import ray.exceptions

    return isinstance(exc, ray.exceptions.RayActorError) and not isinstance(exc, ray.exceptions.RayTaskError)


def get(ref: Any, timeout: float | None = 60) -> Any:
    """``ray.get`` whose FleetErrors come back as themselves (a bad spec is a SpecError, not a
    RayTaskError); every other failure propagates as Ray raised it."""
    import ray

    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        raise ray_errors(exc) from None
