"""Typed browser errors carry their recovery policy; third-party errors are translated; the reaper
judges owners by pid *and* start time."""

from __future__ import annotations

import os
import pickle

import psutil
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from fleet_ray.automation import PhaseTimeout
from fleet_ray.browser.reaper import ProcessTag, owner_alive
from fleet_ray.browser.runtime import classify, failed_phase, recovery_for
from fleet_ray.errors import (
    BlockedError,
    BrowserCrashed,
    BrowserError,
    BrowserHung,
    FleetError,
    NavigationError,
    ProxyAuthError,
    ProxyError,
    Recovery,
    SessionExpired,
)


def _c(exc, **kw):
    args = {"phase": "open", "proxy": "http://***@10.0.0.1:3128", "browser_alive": True, "last_status": None,
            "task_timeout": False}
    args.update(kw)
    return classify(exc, **args)


def test_recovery_table():
    assert recovery_for(NavigationError("x")) is Recovery.RETRY_SAME
    assert recovery_for(ProxyError("x")) is Recovery.ROTATE_PROXY
    assert recovery_for(ProxyAuthError("x")) is Recovery.ROTATE_PROXY
    assert recovery_for(BlockedError("x")) is Recovery.ROTATE_IDENTITY
    assert recovery_for(SessionExpired("x")) is Recovery.ROTATE_IDENTITY
    assert recovery_for(BrowserCrashed("x")) is Recovery.RECYCLE_BROWSER
    assert recovery_for(BrowserHung("x")) is Recovery.RECYCLE_BROWSER
    assert recovery_for(PhaseTimeout("login", 5, "p:0")) is Recovery.RETRY_SAME
    assert recovery_for(ValueError("bug in the automation")) is Recovery.FAIL


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("net::ERR_PROXY_CONNECTION_FAILED at http://shop.test/", ProxyError),
        ("net::ERR_TUNNEL_CONNECTION_FAILED at https://shop.test/", ProxyAuthError),
        ("net::ERR_INVALID_AUTH_CREDENTIALS", ProxyAuthError),
        ("net::ERR_CONNECTION_REFUSED at http://127.0.0.1:1/", NavigationError),
        ("Page crashed", BrowserCrashed),
        ("Target page, context or browser has been closed", BrowserHung),
    ],
)
def test_playwright_errors_are_translated(message, kind):
    err = _c(PlaywrightError(message))
    assert type(err) is kind and err.phase == "open"
    assert isinstance(err, FleetError)


def test_closed_browser_means_crash_and_timeouts_mean_hang_or_navigation():
    assert type(_c(PlaywrightError("Browser has been closed"), browser_alive=False)) is BrowserCrashed
    assert type(_c(TimeoutError(), task_timeout=True)) is BrowserHung
    assert type(_c(PlaywrightTimeout("Timeout 30000ms exceeded"))) is NavigationError
    assert type(_c(PlaywrightError("boom"), last_status=407)) is ProxyAuthError


def test_phase_timeouts_and_automation_bugs_pass_through():
    pt = PhaseTimeout("login", 20, "shop:1")
    assert _c(pt) is pt and failed_phase(pt) == "login"
    bug = KeyError("price")
    assert _c(bug) is bug
    bug.fleet_phase = "extract"
    assert failed_phase(bug) == "extract"


def test_errors_pickle_and_redact():
    err = ProxyAuthError("proxy http://bob:pw123@10.0.0.1:3128 said no", "login", "http://***@10.0.0.1:3128")
    assert "pw123" not in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ProxyAuthError and back.phase == "login" and back.proxy == err.proxy
    assert isinstance(back, BrowserError) and back.recovery is Recovery.ROTATE_PROXY


def test_owner_alive_uses_pid_and_start_time(tmp_path):
    tag = ProcessTag.for_slot("ns", "shop", 0, 3, root=tmp_path)
    assert tag.owner.startswith(f"p{os.getpid()}-") and tag.owner.endswith("-ns-shop-0-g3")
    assert owner_alive(tag.owner)
    ctime = int(psutil.Process().create_time() * 100)
    assert not owner_alive(f"p{os.getpid()}-t{ctime + 1}-ns-shop-0-g3")  # pid reused by another process
    dead = max(psutil.pids()) + 100_000
    assert not owner_alive(f"p{dead}-t1-ns-shop-0-g3")
    assert owner_alive("not-a-fleet-dir")
    assert tag.user_data_dir(2) == tmp_path / tag.owner / "b2" and (tmp_path / tag.owner / "b2").is_dir()
