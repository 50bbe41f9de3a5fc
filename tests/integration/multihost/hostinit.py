"""PID 1 of one namespace host (see hosts.py): set up the host's own view of the filesystem, then reap
orphans until killed.

Run as ``python -I -S hostinit.py CONFIG.json`` by ``unshare --mount --pid --fork`` inside the host's
network namespace, so this process is PID 1 of a fresh PID namespace and owns a private mount
namespace. Standard library only (no site-packages: ``-S``), no imports from the test suite.

CONFIG.json: ``{"home": <dir on disk>, "repo": <repository>, "keep": [<paths to keep visible>],
"cover": [<dirs that get an empty tmpfs>]}``.

Mounts, in this order (what must stay visible is opened first, so covering /tmp or /home can't hide
it even when the repository or the Python installation lives there):
  1. every path in ``keep``, ``home`` and ``repo`` opened as O_PATH handles;
  2. a new /proc for this PID namespace;
  3. empty tmpfs on /tmp and /dev/shm (mode 1777), on /home (0755), and on each extra ``cover`` dir;
  4. the kept paths bound back at their own absolute paths (those under a covered dir), ``home`` bound
     at /home/fleet, the repository bound read-only at /home/fleet/fleet-ray (what `ray up`'s file
     mount would have copied there).
Then it prints ``ready`` on stdout and loops reaping children: Ray daemonizes its processes, whose
zombies would otherwise stay in the process table (and fool ``pgrep -x gcs_server``). Killing this
process (from outside: it is PID 1, nothing inside can) kills every process of the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def _enc(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = _enc
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount({source!r}, {target!r}, {fstype!r}): {os.strerror(err)}")


def umount_lazy(target: str) -> None:
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount2({target!r}): {os.strerror(err)}")


def netns_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith("/run/netns/") or p == "/run/netns"]


def under(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def bind(fd: int, target: str, readonly: bool = False) -> None:
    os.makedirs(target, exist_ok=True)
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def setup(cfg: dict) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here reaches the real machine
    # the copies of the machine's /run/netns/* mounts would keep other hosts' network namespaces alive
    # after those are deleted (a restarted host's old one, say): drop them from this host's view
    for target in reversed(netns_mounts()):
        umount_lazy(target)
    covered = ["/tmp", "/dev/shm", "/home", *cfg.get("cover", [])]
    keep = {p: os.open(p, os.O_PATH) for p in dict.fromkeys(cfg.get("keep", [])) if under(p, covered)}
    home = os.open(cfg["home"], os.O_PATH | os.O_DIRECTORY)
    repo = os.open(cfg["repo"], os.O_PATH | os.O_DIRECTORY)
    if cfg["repo"] not in keep and under(cfg["repo"], covered):
        keep[cfg["repo"]] = repo

    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for d in ("/tmp", "/dev/shm"):
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount("tmpfs", "/home", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for d in cfg.get("cover", []):
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")

    for path in sorted(keep):  # parents before children
        bind(keep[path], path)
    bind(home, "/home/fleet")
    bind(repo, "/home/fleet/fleet-ray", readonly=True)
    for fd in {home, repo, *keep.values()}:
        os.close(fd)
    os.chdir("/home/fleet")


def reap_forever() -> None:
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop | {signal.SIGCHLD})
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        info = signal.sigtimedwait(stop | {signal.SIGCHLD}, 5.0)
        if info is not None and info.si_signo in stop:
            os._exit(0)  # PID 1 exits: the kernel kills every process of the host


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    try:
        setup(cfg)
    except Exception as exc:
        print(f"failed: {exc}", flush=True)
        os._exit(1)
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    reap_forever()


if __name__ == "__main__":
    main()
