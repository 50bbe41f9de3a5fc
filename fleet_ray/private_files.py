"""Files no other local user can read or hijack: private roots, 0600 files, atomic writes.

What fleet-ray keeps on disk holds secrets (the store has proxy passwords, a browser profile and a
saved session have cookies, a Playwright trace has both) or runs as the fleet's user (the Chromium
launcher). Everything written goes through here:

- :func:`private_dir` — a directory only its owner can use (created 0700). An existing one must be a
  real directory (not a symlink), owned by this user, and not writable by group or others; one that is
  merely readable by others is tightened to 0700. Anything else is refused with :class:`UnsafePath`
  (a :class:`PermissionError`) naming the problem and what to do.
- :func:`private_subdirs` — ``base/a/b/c``, each level below ``base`` a :func:`private_dir`.
- :func:`write_private` — an atomic write: a temporary file in the same directory created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never an existing file, never through a symlink), mode 0600 (or the
  mode asked for), written, fsync'ed, then renamed over the target (a rename replaces a symlink, it
  does not follow it).
- :func:`private_file` — an existing or new file (a SQLite database, a lock file) opened without
  following a symlink and made 0600; one owned by someone else is refused.
- :func:`tighten` — make a file someone else wrote for us (Playwright's trace, screenshot) 0600.
- :func:`user_tmp_root` — the per-user root for scratch state that must not live in a directory
  shared by every user: ``<tmp>/<name>-<uid>``.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(PermissionError):
    """A path fleet-ray will not use: owned by another user, writable by others, or a symlink."""


def _uid() -> int:
    return os.geteuid()


def _check_dir(path: Path, st: os.stat_result, tighten_mode: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symlink; fleet-ray keeps private state only in a real directory "
                         "(remove the link, or point the setting at the directory itself)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a directory")
    if st.st_uid != _uid():
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not by this user (uid {_uid()}): another user "
                         "could read or replace what fleet-ray writes there; remove it or use another location")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                         f"run `chmod 700 {path}` or use another location")
    if tighten_mode and st.st_mode & 0o077:
        os.chmod(path, 0o700)


def private_dir(path: str | Path, *, tighten_mode: bool = True) -> Path:
    """``path`` as a directory only this user can use (see the module); created 0700 if missing.
    Missing parents are created with the default mode (they hold nothing secret)."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # mkdir never follows a symlink at the last component
    _check_dir(path, os.lstat(path), tighten_mode)
    return path


def private_subdirs(base: str | Path, *parts: str) -> Path:
    """``base/parts[0]/parts[1]/…``; ``base`` is created 0700 when missing (an existing one is the
    operator's choice and left as it is, unless it is a symlink owned by someone else or a directory
    writable by others without the sticky bit), every level below it is a :func:`private_dir`."""
    base = Path(base)
    if not base.exists():
        private_dir(base)
    else:
        st = os.lstat(base)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (_uid(), 0):
            raise UnsafePath(f"{base} is a symlink owned by uid {st.st_uid}; refusing to write through it")
        real = os.stat(base)
        if real.st_mode & stat.S_IWOTH and not real.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"{base} is writable by everyone without the sticky bit; use another location")
    path = base
    for part in parts:
        path = private_dir(path / part)
    return path


def write_private(path: str | Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` atomically, with ``mode``, never following a symlink (see the module)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have taken bits the caller asked for
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_nofollow(path: str | Path) -> bytes:
    """The content of ``path``, refusing a symlink (``OSError``, ``ELOOP``)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty (0600) if missing, or make an existing one 0600; never through a symlink.
    A file owned by another user is refused (:class:`UnsafePath`)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePath(f"{path} is a symlink; refusing to open it") from exc
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != _uid():
            raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not by this user (uid {_uid()})")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def tighten(path: str | Path) -> None:
    """Make a regular file this user owns 0600 (without following a symlink); missing is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == _uid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def user_tmp_root(name: str) -> Path:
    """``<tmp>/<name>-<uid>``: where per-user scratch state named ``name`` lives (not created here; make
    it with :func:`private_dir`). The same path in every process of this user on the host (unlike
    ``$XDG_RUNTIME_DIR``, which Ray's workers may not inherit, and a small tmpfs besides), so one
    process can find what another left there.
    """
    return Path(tempfile.gettempdir()) / f"{name}-{_uid()}"
