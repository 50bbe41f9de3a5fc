"""Grouping failures: the one algorithm and the one :class:`ErrorGroup` model.

Ten slots failing the same way are one problem, not ten. A :class:`FailureRecord` is one failure;
its :attr:`~FailureRecord.key` says which group it folds into:

- a failure with an exception (a task that raised, a crashed slot) groups by its :func:`fingerprint`,
  the exception type and the innermost frame of the automation's own code (library and framework
  frames skipped): ``'<type> @ <module.function:line>'``;
- a lifecycle failure event without one (:data:`FAILURE_KINDS`: a slot died, failed to start, ...)
  groups by kind and :func:`message_signature` (the message with quoted values, ids and numbers
  masked): ``'<kind>|<signature>'`` (:meth:`FailureRecord.from_event`).

:class:`ErrorGrouper` folds records into groups (:class:`ErrorGroup`) that count them and remember the
kinds, slots, pools and phases involved, first and last seen, and the latest (redacted) message. The
supervisor keeps one for task failures and crashes (``Supervisor.error_groups``, notifications); the
HTTP API's ``GET /errors`` folds the lifecycle failure events with :func:`group_events` and shows both
(:data:`API_EXCLUDE` says what of a group it leaves out). Pure logic: the clock is the records' ``at``.
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
from pydantic.json_schema import SkipJsonSchema

from fleet_ray.observe.envelope import Event
from fleet_ray.redact import redact_url

# frames from these top-level packages are never "user code"
FRAMEWORK_PACKAGES = frozenset({
    "fleet_ray", "ray", "pydantic", "pydantic_core", "asyncio", "concurrent", "threading", "playwright",
    "httpx", "httpcore", "anyio", "redis", "contextlib", "functools", "typing", "_pytest", "pytest",
})
_STDLIB = tuple(os.path.realpath(p) for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_NUMBERS = re.compile(r"\b(0x)?[0-9a-f]{8,}\b|\d+(\.\d+)?", re.I)
_MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b(0x)?[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)
MAX_SLOTS = 200
#: lifecycle events that report a failure without an exception (grouped by kind and message)
FAILURE_KINDS = ("slot.died", "slot.start_failed", "slot.unhealthy", "slot.heal_escalated", "config.rejected")


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


def message_signature(message: str) -> str:
    """The message with quoted values, hex ids and numbers masked, so alike failures group together."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return text[:300]


class FailureRecord(BaseModel):
    """One failure worth grouping: a task that raised, a slot that crashed, a lifecycle failure event."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("task", description="task (an item or run raised) | crash (a slot died) | the kind of a "
                      "lifecycle failure event (slot.died, slot.start_failed, ...).")
    error_type: str | None = Field(None, description="Exception type; None for a failure without one.")
    frame: str | None = Field(None, description="Innermost frame in user code; None for a failure without one.")
    message: str = ""
    pool: str | None = None
    slot: str | None = None
    phase: str | None = None
    task: str | None = None
    at: float = Field(description="Seconds since the epoch.")

    @property
    def fingerprinted(self) -> bool:
        return self.error_type is not None and self.frame is not None

    @property
    def signature(self) -> str:
        """What its group is named by: ``'<type> at <frame>'``, or the masked message."""
        if self.fingerprinted:
            return f"{self.error_type} at {self.frame}"
        return message_signature(redact_url(self.message))

    @property
    def key(self) -> str:
        if self.fingerprinted:
            return Fingerprint(self.error_type, self.frame).key  # type: ignore[arg-type]
        return f"{self.kind}|{self.signature}"

    @classmethod
    def from_event(cls, ev: Event | dict[str, Any]) -> FailureRecord | None:
        """The failure a lifecycle failure event (:data:`FAILURE_KINDS`) reports; None for other kinds."""
        if (ev.kind if isinstance(ev, Event) else ev.get("kind")) not in FAILURE_KINDS:
            return None
        e = ev if isinstance(ev, Event) else Event.model_validate(ev)
        return cls(kind=e.kind, message=e.message, pool=e.pool, slot=e.slot, at=e.epoch_s)


class ErrorGroup(BaseModel):
    """Failures grouped by one key: exception type and first frame in user code, or event kind and message.

    The supervisor's error groups, notifications and the HTTP API's /errors all use this model (the
    API leaves out the kinds list, API_EXCLUDE; key and FailureRecord say how failures are keyed).
    """

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Stable group key: '<error type> @ <module.function:line>' for failures with an "
                     "exception, else '<kind>|<signature>'.")
    kind: str = Field(description="Kinds of the failures in this group, joined by ', ': task, crash, or a lifecycle "
                      "event kind (slot.died, slot.start_failed, ...).")
    signature: str = Field(description="'<error type> at <frame>', or the message with numbers, hex ids and quoted "
                           "values masked.")
    sample: str = Field(description="The most recent full message of the group (credentials redacted).")
    count: int = Field(description="Failures in the group within the window.")
    pools: list[str] = Field(description="Pools that saw this failure.")
    slots: list[str] = Field(description="Slot positions that saw this failure.")
    first_seen: float = Field(description="Seconds since the epoch.")
    last_seen: float = Field(description="Seconds since the epoch.")
    error_type: str | None = Field(None, description="Exception type, for task/automation failures and crashes.")
    frame: str | None = Field(None, description="First stack frame in user code ('module.function:line'), for "
                              "task/automation failures and crashes.")
    phases: list[str] = Field(default_factory=list, description="Automation phases the failures happened in.")
    kinds: SkipJsonSchema[list[str]] = Field(default_factory=list, description="The kinds as a list (not in the "
                                             "HTTP API, which has always shown them joined, as kind).")


#: what the HTTP API leaves out of each group (``ErrorGroups.groups``); its OpenAPI schema omits it too
API_EXCLUDE = frozenset({"kinds"})


class ErrorGrouper:
    """Folds failures (:class:`FailureRecord`) into groups (:class:`ErrorGroup`) by key; keeps the ``max_groups``
    most recently seen (None: all)."""

    def __init__(self, max_groups: int | None = 1000):
        self.max_groups = max_groups
        self._groups: OrderedDict[str, ErrorGroup] = OrderedDict()

    def add(self, rec: FailureRecord) -> tuple[ErrorGroup, bool]:
        """Fold one failure in; returns its group and whether the group is new."""
        key = rec.key
        g = self._groups.get(key)
        new = g is None
        if g is None:
            g = ErrorGroup(key=key, kind=rec.kind, signature=rec.signature, sample="", count=0, pools=[], slots=[],
                           first_seen=rec.at, last_seen=rec.at, error_type=rec.error_type, frame=rec.frame)
            self._groups[key] = g
            while self.max_groups is not None and len(self._groups) > self.max_groups:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(key)
        g.count += 1
        g.first_seen = min(g.first_seen, rec.at)
        if rec.at >= g.last_seen:
            g.last_seen, g.sample = rec.at, redact_url(rec.message)
        for attr, value in (("kinds", rec.kind), ("pools", rec.pool), ("slots", rec.slot), ("phases", rec.phase)):
            values: list[str] = getattr(g, attr)
            if value and value not in values and len(values) < MAX_SLOTS:
                values.append(value)
                values.sort()
        g.kind = ", ".join(g.kinds)
        return g, new

    def add_all(self, records: Iterable[FailureRecord | None]) -> ErrorGrouper:
        for rec in records:
            if rec is not None:
                self.add(rec)
        return self

    def get(self, key: str) -> ErrorGroup | None:
        return self._groups.get(key)

    def groups(self, pool: str | None = None, since: float | None = None) -> list[ErrorGroup]:
        """Most recently seen first."""
        out = [g for g in self._groups.values()
               if (pool is None or pool in g.pools) and (since is None or g.last_seen >= since)]
        return sorted(out, key=lambda g: g.last_seen, reverse=True)

    def dump(self, **filters: Any) -> list[dict[str, Any]]:
        return [g.model_dump(mode="json") for g in self.groups(**filters)]


def group_events(events: Iterable[Event | dict[str, Any]]) -> list[ErrorGroup]:
    """The lifecycle failure events among ``events`` (:data:`FAILURE_KINDS`), grouped; newest group first."""
    return ErrorGrouper(max_groups=None).add_all(FailureRecord.from_event(e) for e in events).groups()


def newest_first(*groups: Iterable[ErrorGroup]) -> list[ErrorGroup]:
    """Several lists of groups as one, most recently seen first (ties keep the given order)."""
    return sorted((g for gs in groups for g in gs), key=lambda g: g.last_seen, reverse=True)
