"""Grouping failures by (exception type, first stack frame in user code).

Ten slots failing the same way are one problem, not ten: :func:`fingerprint` reduces an exception
to its type and the innermost frame of the automation's own code (library and framework frames
are skipped), and :class:`ErrorGroups` folds :class:`FailureRecord`\\s with the same fingerprint
into one :class:`ErrorGroup` that counts them and remembers the slots, pools and phases involved,
first and last seen. Pure logic: the clock is the records' own ``at``.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.errors import redact_url

# frames from these top-level packages are never "user code"
FRAMEWORK_PACKAGES = frozenset({
    "fleet_ray", "ray", "pydantic", "pydantic_core", "asyncio", "concurrent", "threading", "playwright",
    "httpx", "httpcore", "anyio", "redis", "contextlib", "functools", "typing", "_pytest", "pytest",
})
_STDLIB = tuple(os.path.realpath(p) for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_NUMBERS = re.compile(r"\b(0x)?[0-9a-f]{8,}\b|\d+(\.\d+)?", re.I)
MAX_SLOTS = 200


class Fingerprint(NamedTuple):
    error_type: str
    frame: str

    @property
    def key(self) -> str:
        return f"{self.error_type} @ {self.frame}"


def error_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _is_user(module: str, filename: str, user_modules: frozenset[str]) -> bool:
    if user_modules:
        return any(module == m or module.startswith(m + ".") for m in user_modules)
    if module.split(".")[0] in FRAMEWORK_PACKAGES:
        return False
    real = os.path.realpath(filename)
    return not (real.startswith(_STDLIB) and "site-packages" not in real and "dist-packages" not in real)


def user_modules_of(cls: type) -> frozenset[str]:
    """Whose frames count as user code for an automation class: its top-level package, or (for the
    automations shipped inside fleet_ray) its own module."""
    module = cls.__module__
    top = module.split(".")[0]
    return frozenset({module if top == "fleet_ray" else top})


def fingerprint(exc: BaseException, user_modules: Iterable[str] = ()) -> Fingerprint:
    """``(exception type, innermost frame in user code)``; the frame reads ``module.function:line``.

    With ``user_modules`` a frame is user code when its module is one of them (or below); without,
    any frame outside the standard library and the known framework packages is. If no frame
    qualifies, the innermost frame is used.
    """
    users = frozenset(user_modules)
    frames = [(f, lineno) for f, lineno in traceback.walk_tb(exc.__traceback__)]
    chosen = None
    for f, lineno in reversed(frames):
        module = f.f_globals.get("__name__", "") or ""
        if _is_user(module, f.f_code.co_filename, users):
            chosen = (module, f.f_code.co_qualname, lineno)
            break
    if chosen is None and frames:
        f, lineno = frames[-1]
        chosen = (f.f_globals.get("__name__", "?"), f.f_code.co_qualname, lineno)
    frame = f"{chosen[0]}.{chosen[1]}:{chosen[2]}" if chosen else "<no traceback>"
    return Fingerprint(error_type_name(exc), frame)


def short_message(exc_or_text: BaseException | str, limit: int = 500) -> str:
    """First line of an error, credentials in URLs redacted, at most ``limit`` characters."""
    text = exc_or_text if isinstance(exc_or_text, str) else f"{type(exc_or_text).__name__}: {exc_or_text}"
    first = next((line for line in text.strip().splitlines() if line.strip()), "")
    return redact_url(first)[:limit]


def cause_signature(cause: str) -> str:
    """A death cause with numbers and ids masked, so alike deaths (e.g. every SIGKILL) group."""
    return _NUMBERS.sub("<n>", short_message(cause, 200))


class FailureRecord(BaseModel):
    """One failure worth grouping: a task that raised, or a slot that crashed."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("task", description="task (an item or run raised) | crash (a slot died)")
    error_type: str
    frame: str
    message: str = ""
    pool: str | None = None
    slot: str | None = None
    phase: str | None = None
    task: str | None = None
    at: float = Field(description="Seconds since the epoch.")

    @property
    def key(self) -> str:
        return Fingerprint(self.error_type, self.frame).key


class ErrorGroup(BaseModel):
    """Failures with one fingerprint (``GET /errors``-style; see ``Supervisor.error_groups``)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="'<error type> @ <module.function:line>'.")
    error_type: str
    frame: str = Field(description="Innermost frame in user code, 'module.function:line'.")
    count: int = 0
    kinds: list[str] = Field(default_factory=list, description="task and/or crash.")
    pools: list[str] = Field(default_factory=list)
    slots: list[str] = Field(default_factory=list, description="Slot positions that failed this way.")
    phases: list[str] = Field(default_factory=list, description="Phases the failures happened in.")
    first_seen: float
    last_seen: float
    sample: str = Field("", description="The latest message (credentials redacted).")


class ErrorGroups:
    """Groups by fingerprint; keeps the ``max_groups`` most recently seen."""

    def __init__(self, max_groups: int = 1000):
        self.max_groups = max_groups
        self._groups: OrderedDict[str, ErrorGroup] = OrderedDict()

    def add(self, rec: FailureRecord) -> tuple[ErrorGroup, bool]:
        """Fold one failure in; returns its group and whether the group is new."""
        g = self._groups.get(rec.key)
        new = g is None
        if g is None:
            g = ErrorGroup(key=rec.key, error_type=rec.error_type, frame=rec.frame,
                           first_seen=rec.at, last_seen=rec.at)
            self._groups[rec.key] = g
            while len(self._groups) > self.max_groups:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(rec.key)
        g.count += 1
        g.first_seen = min(g.first_seen, rec.at)
        if rec.at >= g.last_seen:
            g.last_seen, g.sample = rec.at, rec.message
        for attr, value in (("kinds", rec.kind), ("pools", rec.pool), ("slots", rec.slot), ("phases", rec.phase)):
            values: list[str] = getattr(g, attr)
            if value and value not in values and len(values) < MAX_SLOTS:
                values.append(value)
                values.sort()
        return g, new

    def get(self, key: str) -> ErrorGroup | None:
        return self._groups.get(key)

    def groups(self, pool: str | None = None, since: float | None = None) -> list[ErrorGroup]:
        """Most recently seen first."""
        out = [g for g in self._groups.values()
               if (pool is None or pool in g.pools) and (since is None or g.last_seen >= since)]
        return sorted(out, key=lambda g: g.last_seen, reverse=True)

    def dump(self, **filters: Any) -> list[dict[str, Any]]:
        return [g.model_dump(mode="json") for g in self.groups(**filters)]
