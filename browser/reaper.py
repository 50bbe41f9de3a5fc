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

The root (:func:`default_root`) is private to the fleet's user: ``<tmp>/fleet-ray-browsers-<uid>``
(or ``$FLEET_RAY_BROWSER_ROOT``), 0700, refused when another user owns it, when others can write to
it or when it is a symlink (:func:`private_root`). Profiles, the launcher and the CPU-shares table
live there; nothing is written through a symlink.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet_ray.private_files import private_dir, private_subdirs, read_nofollow, user_tmp_root, write_private

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
    """``$FLEET_RAY_BROWSER_ROOT``, else ``<tmp>/fleet-ray-browsers-<uid>``: private to this user (a
    directory shared by every user would let another one plant the launcher Chromium runs through)."""
    return Path(os.environ.get(ROOT_ENV) or user_tmp_root("fleet-ray-browsers"))


def private_root(root: Path | None = None) -> Path:
    """The browser root, created 0700 or checked: a real directory of this user that no one else can
    write to (:func:`fleet_ray.private_files.private_dir`; :class:`~fleet_ray.private_files.UnsafePath`
    otherwise, naming what is wrong)."""
    return private_dir(Path(root or default_root()))


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
        """``<root>/<owner>/b<launch>``, every level private to this user (the profile holds cookies)."""
        return private_subdirs(private_root(self.root), self.owner, f"b{launch}")

    def processes(self) -> list[psutil.Process]:
        """Every live Chromium process of this owner."""
        return find_tagged(str(self.owner_dir) + os.sep)


LAUNCHER_NAME = "chromium-launcher.sh"


def _launcher_ok(path: Path) -> bool:
    try:
        st = os.lstat(path)
        return (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
                and read_nofollow(path) == LAUNCHER.encode())
    except OSError:
        return False


def write_launcher(root: Path | None = None) -> Path:
    """Write the launcher script (once: a correct one is kept) into the private root; returns its path.

    The root is checked first (:func:`private_root`); the script is written atomically to a file
    created with ``O_EXCL | O_NOFOLLOW`` and renamed into place, mode 0700, so nothing another user
    placed there (a file, a symlink) is followed, kept or run.
    """
    path = private_root(root) / LAUNCHER_NAME
    if not _launcher_ok(path):
        write_private(path, LAUNCHER, mode=0o700)
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
        private_root(root)  # never remove directories in a root someone else controls
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
