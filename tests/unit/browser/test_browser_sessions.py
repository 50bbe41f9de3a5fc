"""Sessions: rotate vs keep, retirement by uses/age/block, proxy rotation keeps geo consistent,
persistence across restarts - on a fake clock."""

from __future__ import annotations

import random

import pytest

from fleet_ray.browser.identity import IdentityFactory
from fleet_ray.browser.proxies import Outcome, ProxyPool
from fleet_ray.browser.sessions import SessionManager
from fleet_ray.errors import ProxyError
from fleet_ray.spec.browser_options import IdentityOptions, ProxyPolicy, ProxySpec, SessionPolicy
from fleet_ray.testing import FakeClock

ENGINE = "156.0.8078.79"


@pytest.fixture(scope="module")
def factory():
    return IdentityFactory(IdentityOptions(seed=5), ENGINE, pool_size=4)


def _proxies(clock, *countries):
    specs = [ProxySpec(url=f"http://10.1.0.{i}:8080", username="u", password="secret-pw", country=c)
             for i, c in enumerate(countries)]
    return ProxyPool(specs, ProxyPolicy(failure_threshold=1, cooldown_s=60), clock=clock, rng=random.Random(0))


def test_rotate_mode_gives_every_task_a_new_identity(factory):
    clock = FakeClock()
    mgr = SessionManager(SessionPolicy(mode="rotate"), factory, _proxies(clock), clock=clock)
    seen = set()
    for _ in range(5):
        s = mgr.checkout()
        seen.add(s.identity.id)
        mgr.checkin(s, ok=True, storage_state={"cookies": [{"name": "a"}]})
    assert len(seen) == 5
    assert mgr.snapshot()["live"] == 0


def test_session_mode_keeps_identity_and_storage_until_max_uses(factory):
    clock = FakeClock()
    mgr = SessionManager(SessionPolicy(mode="session", max_sessions=1, max_uses=3), factory, _proxies(clock), clock=clock)
    s1 = mgr.checkout()
    mgr.checkin(s1, ok=True, storage_state={"cookies": [{"name": "sid", "value": "1"}]})
    s2 = mgr.checkout()
    assert s2 is s1 and s2.storage_state["cookies"][0]["value"] == "1"
    mgr.checkin(s2, ok=True)
    s3 = mgr.checkout()
    mgr.checkin(s3, ok=True)
    assert s3.retired == "used 3 times"
    s4 = mgr.checkout()
    assert s4.identity.id != s1.identity.id and s4.storage_state is None


def test_sessions_retire_with_age(factory):
    clock = FakeClock()
    mgr = SessionManager(SessionPolicy(mode="session", max_age_s=100, max_uses=None), factory, _proxies(clock),
                         clock=clock)
    s = mgr.checkout()
    mgr.checkin(s, ok=True)
    clock.advance(50)
    assert mgr.checkout() is s
    mgr.checkin(s, ok=True)
    clock.advance(60)
    fresh = mgr.checkout()
    assert fresh is not s and s.retired == "too old"


def test_block_retires_the_session_and_avoids_its_proxy(factory):
    clock = FakeClock()
    proxies = _proxies(clock, None, None)
    mgr = SessionManager(SessionPolicy(mode="session"), factory, proxies, clock=clock)
    s = mgr.checkout()
    replacement = mgr.fresh(s, "BlockedError", avoid_proxies=[s.proxy_id])
    assert s.retired == "BlockedError"
    assert replacement.identity.id != s.identity.id and replacement.proxy_id != s.proxy_id


def test_rotating_to_a_proxy_of_another_country_changes_identity(factory):
    clock = FakeClock()
    proxies = _proxies(clock, "DE", "DE", "JP")
    mgr = SessionManager(SessionPolicy(mode="session"), factory, proxies, clock=clock)
    s = mgr.checkout()
    assert s.identity.country == proxies.get(s.proxy_id).spec.country
    if proxies.get(s.proxy_id).spec.country == "DE":
        same = mgr.rotate_proxy(s, s.proxy_id)
        assert same is s and proxies.get(s.proxy_id).spec.country == "DE"  # same country: same identity
    # only JP left healthy → the identity must move to Japan
    for pid in ("p0", "p1"):
        proxies.report(pid, Outcome.CONNECT_FAILED)
    moved = mgr.rotate_proxy(s, s.proxy_id)
    assert moved.proxy_id == "p2" and moved.identity.country == "JP" and moved.identity.timezone == "Asia/Tokyo"


def test_no_healthy_proxy_is_a_proxy_error(factory):
    clock = FakeClock()
    proxies = _proxies(clock, None)
    proxies.report("p0", Outcome.AUTH_FAILED)
    mgr = SessionManager(SessionPolicy(), factory, proxies, clock=clock)
    with pytest.raises(ProxyError, match="no healthy proxy"):
        mgr.checkout()


def test_sessions_persist_across_restarts_without_secrets(factory, tmp_path):
    clock = FakeClock()
    proxies = _proxies(clock, "DE")
    policy = SessionPolicy(mode="session", max_uses=10)
    mgr = SessionManager(policy, factory, proxies, clock=clock, persist_dir=tmp_path)
    s = mgr.checkout()
    mgr.checkin(s, ok=True, storage_state={"cookies": [{"name": "sid", "value": "abc"}], "origins": []})
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and "secret-pw" not in files[0].read_text()
    again = SessionManager(policy, factory, proxies, clock=clock, persist_dir=tmp_path)
    s2 = again.checkout()
    assert s2.identity == s.identity and s2.uses == 1 and s2.storage_state["cookies"][0]["value"] == "abc"
    again.retire(s2, "logged out")
    assert not list(tmp_path.glob("*.json"))


def test_a_session_runs_up_to_tasks_per_session_at_once_and_drains_before_it_retires(factory):
    clock = FakeClock()
    policy = SessionPolicy(mode="session", max_sessions=2, tasks_per_session=3, max_uses=4)
    mgr = SessionManager(policy, factory, _proxies(clock, "DE", "DE"), clock=clock)
    first = [mgr.checkout() for _ in range(3)]
    assert len({s.id for s in first}) == 1 and first[0].active == 3  # tabs of one session
    fourth = mgr.checkout()  # the first is full: a second session, not a throwaway one
    assert fourth.id != first[0].id and fourth.kept and mgr.snapshot()["live"] == 2
    assert mgr.checkout() is fourth  # the one with room takes it
    shared = first[0]
    for _ in range(3):
        mgr.checkin(shared, ok=True)
    assert shared.uses == 3 and shared.retired is None and shared.active == 0
    assert mgr.checkout() is fourth  # the fullest with room first (fourth is now full)
    b, c = mgr.checkout(), mgr.checkout()
    assert b is c is shared
    # max_uses reached while another task still runs in it: no new task, retired when that one ends
    mgr.checkin(b, ok=True)
    assert shared.uses == 4 and shared.draining == "used 4 times" and shared.retired is None
    assert mgr.checkout() is not shared
    mgr.checkin(c, ok=True)
    assert shared.retired == "used 4 times" and shared.id not in mgr.sessions


def test_a_session_others_still_use_drains_instead_of_going_at_once(factory):
    clock = FakeClock()
    mgr = SessionManager(SessionPolicy(mode="session", max_sessions=1, tasks_per_session=2), factory,
                         _proxies(clock, "DE", "DE"), clock=clock)
    a, b = mgr.checkout(), mgr.checkout()
    assert a is b and a.active == 2
    fresh = mgr.fresh(a, "blocked")  # one task was blocked: it moves on, the other finishes first
    assert fresh.id != a.id and a.draining == "blocked" and a.retired is None and a.active == 1
    assert mgr.checkout().id != a.id  # a draining session takes no new task
    mgr.checkin(b, ok=True)
    assert a.retired == "blocked" and a.id not in mgr.sessions
    # a shared session keeps its proxy for the others: the task whose proxy failed gets a new session
    mgr2 = SessionManager(SessionPolicy(mode="session", max_sessions=2, tasks_per_session=2), factory,
                          _proxies(clock, "DE", "DE", "DE"), clock=clock)
    c, d = mgr2.checkout(), mgr2.checkout()
    assert c is d
    proxy = c.proxy_id
    moved = mgr2.rotate_proxy(c, proxy)
    assert moved.id != c.id and c.proxy_id == proxy and c.draining == "proxy failed" and moved.proxy_id != proxy
