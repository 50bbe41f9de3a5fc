"""No orphaned Chromium: tagging, parent-death signals and a reaper for what a dead slot left.

Chromium runs as a grandchild of the slot's Ray worker (worker → Playwright's node driver →
Chromium → zygote/renderers/GPU/utility processes), and Ray reaps only the worker. Three layers:

1. **Tag.** Every Chromium a slot starts gets a unique ``--user-data-dir`` under
   ``<root>/p<worker pid>-t<worker start time>-<namespace>-<pool>-<index>-g<generation>/b<n>``.
   Chromium passes ``--user-data-dir`` on to every child process, so the whole tree carries the
   owner's pid and start time in its command line. The node driver carries the same owner in its
   environment (``FLEET_RAY_BROWSER_OWNER``).
2. **Parent-death signal.** Chromium is launched through a tiny shell launcher that runs
   ``setpriv --pdeathsig KILL`` before exec'ing the real binary, so the browser dies with its parent
   (the node driver), which itself exits when the worker's pipe to it closes. The launcher also swaps
   Playwright's temporary ``--user-data-dir`` for the tagged one.
3. **Reaper.** On slot start (and from :func:`reap_stale` anywhere), every tagged process whose owner
   is no longer alive (pid gone, or reused by another process) is killed, and its directory removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

OWNER_ENV = "FLEET_RAY_BROWSER_OWNER"
ROOT_ENV = "FLEET_RAY_BROWSER_ROOT"
_OWNER_RE = re.compile(r"^p(?P<pid>\d+)-t(?P<ctime>\d+)-(?P<rest>.+)$")

LAUNCHER = """#!/bin/sh
# fleet-ray Chromium launcher: dies with its parent, runs in the slot's tagged profile directory.
real="${FLEET_RAY_CHROMIUM:?FLEET_RAY_CHROMIUM is not set}"
for a do
  shift
  case "$a" in
    --user-data-dir=*) [ -n "$FLEET_RAY_USER_DATA_DIR" ] && a="--user-data-dir=$FLEET_RAY_USER_DATA_DIR" ;;
  esac
  set -- "$@" "$a"
done
exec setpriv --pdeathsig KILL -- "$real" "$@"
"""


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "fleet-ray-browsers")


def _ctime_token(proc: psutil.Process) -> int:
    return int(proc.create_time() * 100)


@dataclass(frozen=True)
class ProcessTag:
    """Names the processes of one slot process (the owner) under ``root``."""

    root: Path
    owner: str

    @classmethod
    def for_slot(cls, namespace: str, pool: str, index: int, generation: int, root: Path | None = None) -> ProcessTag:
        me = psutil.Process()
        safe_ns = re.sub(r"[^A-Za-z0-9_.-]", "_", namespace)[:40]
        owner = f"p{me.pid}-t{_ctime_token(me)}-{safe_ns}-{pool}-{index}-g{generation}"
        return cls(Path(root or default_root()), owner)

    @property
    def owner_dir(self) -> Path:
        return self.root / self.owner

    def user_data_dir(self, launch: int) -> Path:
        path = self.owner_dir / f"b{launch}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def processes(self) -> list[psutil.Process]:
        """Every live Chromium process of this owner."""
        return find_tagged(str(self.owner_dir) + os.sep)


def write_launcher(root: Path | None = None) -> Path:
    """Write (once) the launcher script; returns its path."""
    root = Path(root or default_root())
    root.mkdir(parents=True, exist_ok=True)
    path = root / "chromium-launcher.sh"
    if not path.exists() or path.read_text() != LAUNCHER:
        tmp = root / f".launcher-{os.getpid()}.tmp"
        tmp.write_text(LAUNCHER)
        tmp.chmod(0o755)
        tmp.replace(path)
    return path


def _udd(cmdline: list[str]) -> str | None:
    for arg in cmdline:
        if arg.startswith("--user-data-dir="):
            return arg.split("=", 1)[1]
    return None


def find_tagged(prefix: str) -> list[psutil.Process]:
    """Processes whose ``--user-data-dir`` starts with ``prefix``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            udd = _udd(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if udd is not None and udd.startswith(prefix):
            out.append(p)
    return out


def owner_alive(owner: str) -> bool:
    m = _OWNER_RE.match(owner)
    if not m:
        return True  # not ours to judge
    try:
        proc = psutil.Process(int(m.group("pid")))
        return _ctime_token(proc) == int(m.group("ctime")) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_processes(procs: list[psutil.Process], timeout_s: float = 3.0) -> int:
    killed = 0
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
            killed += 1
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=timeout_s)
    return killed


def reap_stale(root: Path | None = None) -> int:
    """Kill tagged Chromium and node drivers whose owning slot process is dead; remove their dirs.

    Returns how many processes were killed. Safe to call from any process on the node.
    """
    root = Path(root or default_root())
    prefix = str(root) + os.sep
    stale: list[psutil.Process] = []
    dead_owners: set[str] = set()
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            owner = None
            udd = _udd(p.info["cmdline"] or [])
            if udd is not None and udd.startswith(prefix):
                owner = udd[len(prefix):].split(os.sep, 1)[0]
            elif p.info["name"] and "node" in p.info["name"]:
                owner = p.environ().get(OWNER_ENV)
            if owner and not owner_alive(owner):
                stale.append(p)
                dead_owners.add(owner)
        except (psutil.Error, TypeError):
            continue
    killed = kill_processes(stale) if stale else 0
    if root.exists():
        for d in root.iterdir():
            if d.is_dir() and _OWNER_RE.match(d.name) and not owner_alive(d.name):
                shutil.rmtree(d, ignore_errors=True)
    if killed:
        log.warning("reaped %d Chromium/driver process(es) left by dead slots: %s", killed, sorted(dead_owners))
    return killed


def wait_gone(procs_fn, timeout_s: float, interval_s: float = 0.1) -> list[psutil.Process]:
    """Poll ``procs_fn()`` until it returns no process or the deadline passes; returns the last list."""
    deadline = time.monotonic() + timeout_s
    while True:
        procs = [p for p in procs_fn() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not procs or time.monotonic() > deadline:
            return procs
        time.sleep(interval_s)
