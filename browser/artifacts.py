"""What a failed browser task leaves behind: screenshot, Playwright trace, console log, error record.

Files go to ``<logs_root>/<YYYY-MM-DD>/<pool>/<slot index>/<task>-<phase>.{png,trace.zip,console.log,json}``
(UTC date from the injected clock). The JSON record names the slot, task, phase, error type and
message, identity id and the proxy's *display* name: credentials never reach these files. Every
directory below ``logs_root`` is 0700 and every file 0600 (a trace or screenshot carries cookies and
what the page showed), written atomically without following a symlink.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_ray.private_files import private_subdirs, tighten, write_private
from fleet_ray.redact import redact_url
from fleet_ray.spec.browser_options import ArtifactOptions

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str, limit: int = 80) -> str:
    return _SAFE.sub("_", text).strip("_")[:limit] or "x"


class ConsoleLog:
    """Bounded console and page-error capture of one task."""

    def __init__(self, max_lines: int):
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._handlers: list[tuple[str, Any]] = []

    def attach(self, page: Any) -> None:
        self._handlers = [
            ("console", lambda m: self.lines.append(f"[{m.type}] {redact_url(m.text)}")),
            ("pageerror", lambda e: self.lines.append(f"[pageerror] {redact_url(str(e))}")),
            ("crash", lambda _p: self.lines.append("[crash] the page's renderer crashed")),
        ]
        for event, handler in self._handlers:
            page.on(event, handler)

    def detach(self, page: Any) -> None:
        """Stop listening (the page goes on to another task)."""
        for event, handler in self._handlers:
            page.remove_listener(event, handler)
        self._handlers = []


class ArtifactWriter:
    def __init__(self, options: ArtifactOptions, pool: str, slot_index: int, clock: Callable[[], float] = time.time):
        self.options = options
        self.pool = pool
        self.slot_index = slot_index
        self.clock = clock
        self.saved = 0

    def directory(self) -> Path:
        day = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%d")
        return Path(self.options.logs_root) / day / self.pool / str(self.slot_index)

    def _private_directory(self) -> Path:
        """:meth:`directory`, each level below ``logs_root`` created 0700 and checked (a trace holds
        cookies and the pages' requests: no other local user may read it or plant a link there)."""
        folder = self.directory()
        return private_subdirs(self.options.logs_root, *folder.relative_to(self.options.logs_root).parts)

    async def save(
        self,
        *,
        task: str,
        phase: str | None,
        error: BaseException,
        page: Any | None,
        context: Any | None,
        tracing: bool,
        console: ConsoleLog | None,
        meta: dict[str, Any],
    ) -> dict[str, str]:
        """Write what can be written; each piece is best effort (a hung page gets no screenshot)."""
        try:
            folder = self._private_directory()
        except OSError as exc:  # UnsafePath included: the task's own error is what the caller reports
            log.warning("artifacts of task %s not saved: %s", task, exc)
            return {}
        stem = f"{safe_name(task)}-{safe_name(phase or 'task')}"
        files: dict[str, str] = {}
        if self.options.screenshot and page is not None:
            path = folder / f"{stem}.png"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(page.screenshot(path=str(path), timeout=5_000), 6)
                tighten(path)
                files["screenshot"] = str(path)
        if tracing and context is not None:
            path = folder / f"{stem}.trace.zip"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.tracing.stop(path=str(path)), 15)
                tighten(path)
                files["trace"] = str(path)
        if self.options.console and console is not None:
            path = folder / f"{stem}.console.log"
            write_private(path, "\n".join(console.lines) + ("\n" if console.lines else ""))
            files["console"] = str(path)
        record = {
            "pool": self.pool,
            "slot": self.slot_index,
            "task": task,
            "phase": phase,
            "error_type": type(error).__name__,
            "error": redact_url(str(error))[:4000],
            "at": self.clock(),
            "files": files,
            **meta,
        }
        path = folder / f"{stem}.json"
        write_private(path, json.dumps(record, indent=2, default=str))
        files["record"] = str(path)
        self.saved += 1
        log.info("task %s failed in phase %s; artifacts in %s", task, phase, folder)
        return files
