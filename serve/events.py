"""Events over HTTP: cursors, the wire shape, and the Server-Sent Events stream.

The wire shape is :class:`~fleet_ray.api.models.EventOut` (the envelope, redacted, with ``at`` and
``cursor``); filters are the supervisor's (:func:`fleet_ray.observe.events.matches`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fleet_ray.api.models import EventOut
from fleet_ray.observe.envelope import Event

Cursor = tuple[int, int, str]


class BadCursor(ValueError):
    pass


def format_cursor(e: dict[str, Any] | Event) -> str:
    physical, counter, id_ = e.position if isinstance(e, Event) else (e["physical"], e.get("counter", 0), e["id"])
    return f"{physical}-{counter}-{id_}"


def parse_cursor(text: str) -> Cursor:
    """``'<physical>-<counter>-<id>'`` → tuple; raises :class:`BadCursor` naming the problem."""
    parts = text.split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[0]) > 15:
        raise BadCursor(f"not an event cursor: {text[:80]!r} (expected '<physical>-<counter>-<id>')")
    return int(parts[0]), int(parts[1]), parts[2][:64]


def event_out(e: dict[str, Any] | Event) -> dict[str, Any]:
    """A supervisor event (or its dict) → the API's :class:`EventOut` shape (redacted)."""
    ev = e if isinstance(e, Event) else Event.model_validate(e)
    return EventOut.from_event(ev, format_cursor(ev)).model_dump(mode="json")


def sse_frame(e: dict[str, Any]) -> str:
    return f"id: {e['cursor']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n"


async def follow(
    fetch: Callable[..., Any],
    filters: dict[str, Any],
    cursor: Cursor | None,
    backlog: int,
    poll_s: float,
    keepalive_s: float,
    timeout_s: float | None,
    is_disconnected: Callable[[], Any],
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """Yield SSE frames: first up to ``backlog`` recent matching events (when no cursor is given),
    then every new matching event as the supervisor records it.

    ``fetch(**kwargs)`` is the supervisor's ``api_events``; events are polled every ``poll_s``.
    """
    started = last_sent = clock()
    yield "retry: 3000\n: connected\n\n"
    if cursor is None:
        newest = (await fetch(limit=1))["events"]
        cursor = tuple(newest[-1][k] for k in ("physical", "counter", "id")) if newest else (0, 0, "")
        if backlog:
            recent = (await fetch(**filters, limit=backlog))["events"]
            for e in recent:
                yield sse_frame(event_out(e))
            if recent:
                last = recent[-1]
                cursor = max(cursor, (last["physical"], last["counter"], last["id"]))
    while True:
        if timeout_s is not None and clock() - started >= timeout_s:
            return
        if await is_disconnected():
            return
        page = await fetch(**filters, after=list(cursor), limit=500)
        for e in page["events"]:
            cursor = (e["physical"], e["counter"], e["id"])
            yield sse_frame(event_out(e))
            last_sent = clock()
        if len(page["events"]) < 500 and page.get("newest"):
            cursor = max(cursor, tuple(page["newest"]))  # skip past what didn't match the filters
        if clock() - last_sent >= keepalive_s:
            last_sent = clock()
            yield ": keepalive\n\n"
        if len(page["events"]) < 500:
            await asyncio.sleep(poll_s)
