"""Files other local users can't read or hijack (issue 15, item 11): private roots (0700, owner and mode
checked), 0600 files written atomically without following symlinks; the browser root, the launcher,
the CPU-shares table, saved sessions, failure artifacts and the SQLite store.

Some cases hand a directory to another user (``nobody``) with chown, which needs root; they are
skipped otherwise."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import stat
from pathlib import Path

import pytest

from fleet_ray.browser import reaper
from fleet_ray.browser.artifacts import ArtifactWriter, ConsoleLog
from fleet_ray.browser.cpus import CpuShare
from fleet_ray.browser.identity import IdentityFactory
from fleet_ray.browser.proxies import ProxyPool
from fleet_ray.browser.reaper import LAUNCHER, ProcessTag, default_root, write_launcher
from fleet_ray.browser.sessions import SessionManager
from fleet_ray.errors import StoreError
from fleet_ray.private_files import UnsafePath, private_dir, write_private
from fleet_ray.spec.browser_options import (
    ArtifactOptions,
    IdentityOptions,
    ProxyPolicy,
    ProxySpec,
    SessionPolicy,
)
from fleet_ray.store.sqlite import SQLiteStore
from fleet_ray.testing import FakeClock

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another user needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def other_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


# -- the building blocks ---------------------------------------------------------------------------
def test_private_dir_is_created_0700_and_a_readable_one_of_ours_is_tightened(tmp_path):
    assert mode(private_dir(tmp_path / "new")) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert mode(private_dir(loose)) == 0o700


def test_private_dir_refuses_a_symlink_and_a_group_writable_dir(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafePath, match="symlink"):
        private_dir(tmp_path / "link")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)
    with pytest.raises(UnsafePath, match="writable by group or others"):
        private_dir(shared)


@as_root
def test_private_dir_refuses_a_dir_owned_by_another_user(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, other_uid(), -1)
    with pytest.raises(UnsafePath, match=f"owned by uid {other_uid()}"):
        private_dir(theirs)


def test_write_private_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out.json").symlink_to(victim)
    write_private(tmp_path / "out.json", "{}")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out.json").is_symlink() and (tmp_path / "out.json").read_text() == "{}"
    assert mode(tmp_path / "out.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "victim"]  # no temporary file left


# -- the browser root and its launcher -------------------------------------------------------------
def test_the_default_browser_root_is_per_user(monkeypatch):
    monkeypatch.delenv(reaper.ROOT_ENV, raising=False)
    root = default_root()
    assert root.name == f"fleet-ray-browsers-{os.geteuid()}" and root != Path("/tmp/fleet-ray-browsers")


def test_the_launcher_is_0700_in_a_0700_root_and_a_planted_one_is_replaced(tmp_path):
    root = tmp_path / "browsers"
    path = write_launcher(root)
    assert mode(root) == 0o700 and mode(path) == 0o700 and path.read_text() == LAUNCHER
    # something put a symlink where the launcher goes: it is replaced, its target left alone
    victim = tmp_path / "victim.sh"
    victim.write_text("#!/bin/sh\necho pwned\n")
    path.unlink()
    path.symlink_to(victim)
    assert write_launcher(root) == path
    assert not path.is_symlink() and path.read_text() == LAUNCHER and victim.read_text().endswith("pwned\n")
    # a launcher with the right text but a loose mode is rewritten too
    os.chmod(path, 0o777)
    write_launcher(root)
    assert mode(path) == 0o700


@as_root
def test_a_browser_root_made_by_another_user_is_refused(tmp_path):
    root = tmp_path / "browsers"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    os.chown(root, other_uid(), -1)
    planted = root / reaper.LAUNCHER_NAME
    planted.write_text("#!/bin/sh\necho pwned\n")
    with pytest.raises(UnsafePath, match="owned by uid"):
        write_launcher(root)
    with pytest.raises(UnsafePath):
        ProcessTag.for_slot("ns", "crawl", 0, 1, root=root).user_data_dir(1)
    with pytest.raises(UnsafePath):
        reaper.reap_stale(root)
    assert planted.read_text().endswith("pwned\n")  # nothing of theirs was used or changed


def test_a_browser_root_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "browsers").symlink_to(real)
    with pytest.raises(UnsafePath, match="symlink"):
        write_launcher(tmp_path / "browsers")


def test_profile_directories_are_private(tmp_path):
    tag = ProcessTag.for_slot("ns", "crawl", 0, 1, root=tmp_path / "browsers")
    udd = tag.user_data_dir(1)
    assert mode(udd) == 0o700 and mode(udd.parent) == 0o700 and mode(tmp_path / "browsers") == 0o700


@as_root
def test_the_cpu_table_is_not_used_in_a_root_of_another_user(tmp_path):
    root = tmp_path / "browsers"
    root.mkdir(mode=0o700)
    os.chown(root, other_uid(), -1)
    share = CpuShare(root, ProcessTag.for_slot("ns", "crawl", 0, 1, root=root).owner, [0, 1])
    assert share.apply([]) == [] and "UnsafePath" in (share.problem or "")


def test_the_cpu_table_is_0600_and_a_planted_symlink_is_not_followed(tmp_path):
    root = tmp_path / "browsers"
    private_dir(root)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (root / "cpu-shares.json").symlink_to(victim)
    share = CpuShare(root, ProcessTag.for_slot("ns", "crawl", 0, 1, root=root).owner, [0, 1])
    assert share.share() == [0, 1]
    assert victim.read_text() == "precious" and not (root / "cpu-shares.json").is_symlink()
    assert mode(root / "cpu-shares.json") == 0o600 and mode(root / "cpu-shares.json.lock") == 0o600


# -- sessions and artifacts ------------------------------------------------------------------------
def test_saved_sessions_are_0600_in_a_0700_directory(tmp_path):
    clock = FakeClock()
    proxies = ProxyPool([ProxySpec(url="http://10.1.0.1:8080", username="u", password="pw")],
                        ProxyPolicy(), clock=clock, rng=random.Random(0))
    factory = IdentityFactory(IdentityOptions(seed=5), "156.0.8078.79", pool_size=2)
    persist = tmp_path / "sessions" / "crawl" / "0"
    mgr = SessionManager(SessionPolicy(mode="session", max_sessions=1), factory, proxies, clock=clock,
                         persist_dir=persist)
    s = mgr.checkout()
    mgr.checkin(s, ok=True, storage_state={"cookies": [{"name": "sid", "value": "c00kie"}]})
    saved = persist / f"{s.id}.json"
    assert mode(persist) == 0o700 and mode(saved) == 0o600
    again = SessionManager(SessionPolicy(mode="session", max_sessions=1), factory, proxies, clock=clock,
                           persist_dir=persist)
    assert list(again.sessions) == [s.id]


def test_failure_artifacts_are_0600_in_0700_directories(tmp_path):
    writer = ArtifactWriter(ArtifactOptions(logs_root=str(tmp_path / "logs")), "crawl", 0, clock=lambda: 0.0)
    console = ConsoleLog(10)
    console.lines.append("[log] hello")
    files = asyncio.run(writer.save(task="t1", phase="goto", error=RuntimeError("boom"), page=None, context=None,
                                    tracing=False, console=console, meta={}))
    for f in files.values():
        assert mode(Path(f)) == 0o600, f
    folder = Path(files["record"]).parent
    while folder != tmp_path:
        assert mode(folder) == 0o700, folder
        folder = folder.parent


# -- the SQLite store ------------------------------------------------------------------------------
def test_a_new_store_file_and_its_wal_are_private(tmp_path):
    db = tmp_path / "home" / "store.db"
    store = SQLiteStore(str(db))
    store.put("k", b"v")
    assert mode(db.parent) == 0o700 and mode(db) == 0o600
    for side in ("store.db-wal", "store.db-shm"):
        if (db.parent / side).exists():
            assert mode(db.parent / side) == 0o600, side


def test_an_existing_readable_store_file_is_tightened(tmp_path):
    db = tmp_path / "store.db"
    SQLiteStore(str(db)).put("k", b"v")
    os.chmod(db, 0o644)
    SQLiteStore(str(db))
    assert mode(db) == 0o600


def test_a_store_file_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere.db"
    (tmp_path / "store.db").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symlink"):
        SQLiteStore(str(tmp_path / "store.db"))
    assert not elsewhere.exists()
