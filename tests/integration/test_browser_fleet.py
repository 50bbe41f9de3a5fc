"""Browser pools on a real multi-node Ray cluster: work through Chromium, secrets, zero orphans."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest
import ray

from fleet_ray.browser.cpus import split
from fleet_ray.browser.loopback import AuthProxy, SiteServer
from fleet_ray.browser.reaper import default_root, find_tagged

from .conftest import sigkill

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

SECRET = "Sup3r-s3cret-pw"
PAGE = b"<html><head><title>Page %s</title></head><body><a href='/a'>a</a> <a href='/b'>b</a></body></html>"


@pytest.fixture
def site():
    with SiteServer(handler=lambda path, _h: (200, "text/html", PAGE % path.encode())) as s:
        yield s


def browser_pool(name: str, slots: int, logs, **browser) -> dict:
    return {
        "name": name,
        "automation": "browser.page-info",
        "kind": "browser",
        "slots": slots,
        "concurrency": 2,
        "placement": {"resources": {"browser": 1}},
        "health": {"period_s": 0.5, "timeout_s": 20, "failure_threshold": 5, "start_timeout_s": 240},
        "browser": {"artifacts": {"logs_root": str(logs)}, **browser},
    }


def chromium_of(namespace: str, owner_pid: int | None = None) -> list[psutil.Process]:
    prefix = str(default_root()) + os.sep
    out = []
    for p in find_tagged(prefix):
        try:
            udd = next(a for a in p.cmdline() if a.startswith("--user-data-dir="))
            owner = udd.split("=", 1)[1][len(prefix):].split(os.sep, 1)[0]
            if f"-{namespace}-" in owner and (owner_pid is None or owner.startswith(f"p{owner_pid}-")):
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        except (psutil.Error, StopIteration):
            continue
    return out


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def test_browser_pool_processes_items_through_chromium(fleet, site, tmp_path):
    fleet.apply({"pools": [browser_pool("crawl", 2, tmp_path / "logs", pages_per_browser=5)]})
    st = fleet.wait_ready(300)
    urls = [f"{site.url}/p{i}" for i in range(16)]
    results = fleet.submit("crawl", urls).wait(timeout_s=300)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    by_url = {r.value["url"]: r.value for r in results}
    assert set(by_url) == set(urls)
    assert by_url[f"{site.url}/p3"]["title"] == "Page /p3"
    assert by_url[f"{site.url}/p3"]["links"] == [f"{site.url}/a", f"{site.url}/b"]
    # the status (and so the API, CLI and dashboard) shows each slot's browser from its health checks
    st = fleet.wait_until(lambda s: sum(x.browser.pages if x.browser else 0 for x in s.pool("crawl").slots) == 16, 60)
    slots = st.pool("crawl").slots
    assert {s.state for s in slots} == {"running"}
    # (Chromium's memory is not checked per slot here: a slot between browser recycles has none)
    assert all(s.browser.chromium and s.browser.launches >= 1 and s.browser.crashes == 0 for s in slots)
    assert max(s.browser.launches for s in slots) >= 2
    # rss_mb of a browser slot is its whole tree: worker + driver + Chromium
    handle = ray.get_actor(slots[0].actor, namespace=fleet.namespace)
    health = ray.get(handle.health.remote(), timeout=60)
    assert health["ok"] and health["rss_mb"] > health["browser"]["browser_rss_mb"] > 20
    total_pages = 0
    for s in slots:
        h = ray.get(ray.get_actor(s.actor, namespace=fleet.namespace).health.remote(), timeout=60)
        total_pages += h["browser"]["browser"]["pages"]
    assert total_pages == 16
    assert any(
        ray.get(ray.get_actor(s.actor, namespace=fleet.namespace).health.remote(), timeout=60)["browser"]["browser"][
            "launches"] >= 2 for s in slots
    ), "a slot that served more than pages_per_browser pages recycled its Chromium"


def tree_cpus(pid: int) -> set[tuple[int, ...]]:
    """The CPU sets the threads of a slot's whole process tree (worker, driver, Chromium) may use."""
    root = psutil.Process(pid)
    out = set()
    for p in [root, *root.children(recursive=True)]:
        try:
            for t in p.threads():
                try:
                    out.add(tuple(sorted(os.sched_getaffinity(t.id))))
                except OSError:
                    continue  # the thread ended meanwhile
        except psutil.Error:
            continue
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_browser_slots_split_the_hosts_cpus_and_take_back_a_leaving_slots(fleet, site, tmp_path):
    host = sorted(os.sched_getaffinity(0))  # the raylets (our children) and so the slots start with these
    fleet.apply({"pools": [browser_pool("split", 2, tmp_path / "logs")]})
    fleet.wait_ready(300)
    expected = sorted(tuple(split(host, 2, i)) for i in range(2))

    def reported(s):  # each slot's share as its health report (status, API, dashboard) shows it
        slots = s.pool("split").slots
        return sorted(tuple(x.browser.cpus or ()) for x in slots if x.browser) == expected and len(slots) == 2

    # (slots of earlier tests that are still leaving count until they are gone)
    st = fleet.wait_until(reported, 120)
    slots = st.pool("split").slots
    for s in slots:
        assert len(chromium_of(fleet.namespace, s.pid)) >= 3
        assert tree_cpus(s.pid) == {tuple(s.browser.cpus)}, f"slot {s.id}: every thread of its tree on its share"
    if len(host) >= 2:
        assert not set(slots[0].browser.cpus) & set(slots[1].browser.cpus)
    results = fleet.submit("split", [f"{site.url}/c{i}" for i in range(6)]).wait(timeout_s=300)
    assert sorted(r.value["title"] for r in results) == [f"Page /c{i}" for i in range(6)]
    # one slot leaves: the other takes the whole host, Chromium's renderers included
    fleet.apply({"pools": [browser_pool("split", 1, tmp_path / "logs")]})
    st = fleet.wait_until(lambda s: len(s.pool("split").slots) == 1 and s.pool("split").slots[0].browser
                          and s.pool("split").slots[0].browser.cpus == host, 120)
    left = st.pool("split").slots[0]
    assert fleet.submit("split", [f"{site.url}/after"]).wait(timeout_s=300)[0].ok
    assert tree_cpus(left.pid) == {tuple(host)}


def test_proxy_credentials_reach_chromium_but_never_status_events_or_errors(fleet, site, tmp_path):
    hosts = {"shop.test": ("127.0.0.1", site.port)}
    with AuthProxy("alice", SECRET, hosts=hosts) as proxy:
        good = {"url": proxy.url, "username": "alice", "password": SECRET, "country": "DE"}
        bad = {"url": proxy.url, "username": "alice", "password": "not-" + SECRET}
        fleet.apply({"pools": [
            browser_pool("via-proxy", 1, tmp_path / "logs", proxies=[good]),
            browser_pool("bad-proxy", 1, tmp_path / "logs", proxies=[bad], max_attempts=2),
        ]})
        fleet.wait_ready(300)
        ok = fleet.submit("via-proxy", ["http://shop.test/one", "http://shop.test/two"]).wait(timeout_s=300)
        failed = fleet.submit("bad-proxy", ["http://shop.test/three"]).wait(timeout_s=300)
    assert sorted(r.value["title"] for r in ok) == ["Page /one", "Page /two"]
    assert {r.path for r in proxy.authenticated("alice")} >= {"/one", "/two"}
    assert not failed[0].ok and "ProxyAuthError" in failed[0].error and "slot bad-proxy:0" in failed[0].error
    st = fleet.wait_until(lambda s: (b := s.pool("bad-proxy").slots[0].browser) is not None
                          and [p.health for p in b.proxies] == ["quarantined"], 60)
    assert [p.health for p in st.pool("via-proxy").slots[0].browser.proxies] == ["healthy"]
    assert "alice" not in st.model_dump_json()
    slot_actor = st.pool("bad-proxy").slots[0].actor
    health = ray.get(ray.get_actor(slot_actor, namespace=fleet.namespace).health.remote(), timeout=60)
    assert health["browser"]["proxies"][0]["health"] == "quarantined"
    visible = [
        st.model_dump_json(),
        json.dumps(fleet.events()),
        json.dumps([r.model_dump() for r in ok + failed]),
        json.dumps(health),
        *(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.suffix in (".json", ".log")),
    ]
    for text in visible:
        assert SECRET not in text


def test_sigkilled_browser_slot_leaves_no_chromium_and_is_replaced(fleet, site, tmp_path):
    fleet.apply({"pools": [browser_pool("victim", 1, tmp_path / "logs")]})
    st = fleet.wait_ready(300)
    slot = st.pool("victim").slots[0]
    before = chromium_of(fleet.namespace, slot.pid)
    assert len(before) >= 3, "Chromium runs as several processes (browser, zygote, renderers...)"
    sigkill(slot.pid)
    leftover = wait_for(lambda: not chromium_of(fleet.namespace, slot.pid), timeout_s=5)
    assert leftover, f"orphans after 5s: {[p.pid for p in chromium_of(fleet.namespace, slot.pid)]}"
    st = fleet.wait_until(
        lambda s: (x := s.slot("victim:0")) is not None and x.state == "running" and x.generation == 2, 300
    )
    assert chromium_of(fleet.namespace, st.slot("victim:0").pid)
    assert fleet.submit("victim", [f"{site.url}/after"]).wait(timeout_s=300)[0].value["title"] == "Page /after"


def test_stale_chromium_is_reaped_on_slot_start_and_down_leaves_none(fleet, tmp_path):
    dead_pid = max(psutil.pids()) + 200_000
    stale_dir = default_root() / f"p{dead_pid}-t1-{fleet.namespace}-ghost-0-g1" / "b1"
    stale_dir.mkdir(parents=True, exist_ok=True)
    ghost = subprocess.Popen(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={stale_dir}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert wait_for(lambda: chromium_of(fleet.namespace, dead_pid), 60), "the stale Chromium did not start"
        fleet.apply({"pools": [browser_pool("fresh", 2, tmp_path / "logs")]})
        fleet.wait_ready(300)
        assert wait_for(lambda: not chromium_of(fleet.namespace, dead_pid), 10)
        assert ghost.wait(10) is not None
        assert not stale_dir.parent.exists()
        assert chromium_of(fleet.namespace)
        fleet.down(timeout_s=30)
        assert wait_for(lambda: not chromium_of(fleet.namespace), 15), [
            " ".join(p.cmdline())[:200] for p in chromium_of(fleet.namespace)
        ]
    finally:
        if ghost.poll() is None:
            ghost.kill()
