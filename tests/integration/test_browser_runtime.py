"""The browser runtime with real Chromium against pages and proxies on loopback (no Ray needed).

Each test starts its own runtime (one Chromium), with the process tag root and the logs root under
``tmp_path`` so nothing leaks between tests or into the repository.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from fleet_ray.automation import NoConfig, PhaseTimeout, SlotIdentity
from fleet_ray.browser.automation import BrowserSlotContext
from fleet_ray.browser.loopback import AuthProxy, SiteServer, Socks5Proxy
from fleet_ray.browser.reaper import ProcessTag
from fleet_ray.browser.runtime import CURRENT_TASK, BrowserRuntime
from fleet_ray.errors import AutomationError, BrowserHung, ProxyAuthError
from fleet_ray.spec.browser_options import BrowserOptions

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

FIXTURES = Path(__file__).parents[1] / "fixtures"
SECRET = "pa55-Wrd-9x"
PAGE = b"<html><head><title>Hello %s</title></head><body><a href='/next'>next</a></body></html>"


# the identity probe asks for the high-entropy client hints, as a site that reads them does
ACCEPT_CH = {"Accept-CH": "Sec-CH-UA-Platform-Version, Sec-CH-UA-Full-Version-List, Sec-CH-UA-Arch, "
                          "Sec-CH-UA-Bitness, Sec-CH-UA-Model"}


def _routes(path: str, headers: dict[str, str]):
    p = path.split("?", 1)[0]
    if p == "/echo-headers":  # the identity probe: what a scope's own requests carried
        return (200, "application/json", json.dumps(headers).encode(), ACCEPT_CH)
    f = FIXTURES / p.lstrip("/")
    if p.endswith((".html", ".js")) and f.is_file():
        return (200, "text/html" if p.endswith(".html") else "application/javascript", f.read_bytes(), ACCEPT_CH)
    if p == "/cached.html":  # a page whose stylesheet any HTTP cache may keep for an hour
        return (200, "text/html", b"<title>cached</title><link rel='stylesheet' href='/cached.css'>"
                b"<script>console.log('page ' + location.search)</script>")
    if p == "/cached.css":
        return (200, "text/css", b"body { color: #333 }", {"Cache-Control": "max-age=3600"})
    if p == "/slow.png":
        time.sleep(4)
        return (200, "image/png", b"")
    if p == "/slow.html":
        return (200, "text/html", b"<title>slow</title><script>console.log('hello from the page')</script>"
                b"<img src='/slow.png'>")
    if p == "/hang.html":
        return (200, "text/html", b"<title>hang</title><script>while (true) {}</script>")
    if p == "/img.html":
        return (200, "text/html", b"<title>img</title><img src='/pixel.png'>")
    if p == "/pixel.png":
        return (200, "image/png", b"\x89PNG\r\n\x1a\n")
    if p == "/forbidden":
        return (403, "text/html", b"<title>Access denied</title>")
    if p == "/challenge.html":
        return (200, "text/html", b"<title>Just a moment</title><div class='cf-turnstile'></div>")
    return (200, "text/html", PAGE % p.encode())


@pytest.fixture
def site():
    with SiteServer(handler=_routes) as s:
        yield s


def _runtime(tmp_path: Path, index: int = 0, **options) -> BrowserRuntime:
    raw = {"identity": {"seed": 100 + index}, "artifacts": {"logs_root": str(tmp_path / "logs")}}
    for k, v in options.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    opts = BrowserOptions.model_validate(raw)
    tag = ProcessTag.for_slot("rt-test", "shop", index, 1, root=tmp_path / "browsers")
    return BrowserRuntime(opts, "shop", index, tag)


def _run(coro):
    return asyncio.run(coro)


async def _title(page, url):
    await page.goto(url)
    return await page.title()


async def _report(page, url, var="identityReport"):
    await page.goto(url)
    await page.wait_for_function("document.title === 'done'", timeout=30_000)
    task = CURRENT_TASK.get()
    return await page.evaluate(f"window.{var}"), task.identity


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _cmdline(p) -> str:
    """A process's command line; "" once it ended (a closed context's renderer can end as we look)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _wait(predicate, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# -- identities ----------------------------------------------------------------------------------------
def test_fifty_identities_are_consistent_in_the_page(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path)
        await rt.start()
        try:
            sem = asyncio.Semaphore(4)

            async def one(i):
                async with sem:
                    return await rt.run(lambda p, u: _report(p, u), f"{site.url}/identity.html?noscopes&i={i}",
                                        f"id{i}")

            return await asyncio.gather(*(one(i) for i in range(50))), rt.host.version
        finally:
            await rt.close()

    results, version = _run(scenario())
    major = version.split(".")[0]
    assert len(results) == 50
    for report, ident in results:
        assert report["problems"] == [], (ident.os, report["problems"])
        f = report["facts"]
        assert f["userAgent"] == ident.user_agent and f"Chrome/{major}.0.0.0" in f["userAgent"]
        assert f["platform"] == ident.platform and f["chPlatform"] == ident.ch_platform
        assert [b["brand"] for b in f["brands"]] == [b.brand for b in ident.brands]
        assert f["timezone"] == ident.timezone and f["languages"] == ident.languages
        assert f["screen"]["width"] == ident.screen_width and f["screen"]["height"] == ident.screen_height
        assert f["inner"] == {"width": ident.viewport_width, "height": ident.viewport_height}
        assert f["hardwareConcurrency"] == ident.hardware_concurrency and f["deviceMemory"] == ident.device_memory
        assert f["webgl"] == {"vendor": ident.webgl_vendor, "renderer": ident.webgl_renderer}
        assert f["webdriver"] is False
    assert {ident.os for _, ident in results} == {"windows", "macos", "linux"}
    # distinct identities → distinct canvas fingerprints
    canvases = {r["facts"]["canvas"] for r, _ in results}
    assert len(canvases) == 50
    # the headers the site saw: client hints of the claimed browser, nothing headless
    seen = [h for path, h in site.requests if path.startswith("/identity.html")]
    assert len(seen) == 50
    for h in seen:
        assert "Headless" not in h["user-agent"] and "Headless" not in h.get("sec-ch-ua", "")
        assert f'"Chromium";v="{major}"' in h["sec-ch-ua"]
        assert f'"Google Chrome";v="{major}"' in h["sec-ch-ua"]
    uas = {r["facts"]["userAgent"]: r["facts"]["chPlatform"] for r, _ in results}
    for h in seen:
        assert h["sec-ch-ua-platform"].strip('"') == uas[h["user-agent"]]


def test_every_scope_of_a_page_speaks_for_the_same_identity(site, tmp_path):
    """Dedicated (URL and blob), shared and service workers, iframes (about:blank read at once, srcdoc,
    same-origin) and popups (a page, and about:blank read at once) report the page's user agent, client
    hints (low and high entropy), platform, languages, hardware, timezone and locale, their requests
    carry the page's headers, and permissions are a fresh profile's — for identities of every OS and
    of countries with other languages."""
    async def scenario():
        out = []
        for index, country in enumerate(["US", "DE", "JP"]):
            rt = _runtime(tmp_path, index=10 + index, identity={"seed": 500 + index, "country": country})
            await rt.start()
            try:
                for i in range(4):
                    out.append(await rt.run(lambda p, u: _report(p, u), f"{site.url}/identity.html?c={country}&i={i}",
                                            f"{country}{i}"))
            finally:
                await rt.close()
        return out

    results = _run(scenario())
    assert len(results) == 12
    assert {ident.os for _, ident in results} == {"windows", "macos", "linux"}
    for report, ident in results:
        assert report["problems"] == [], (ident.os, ident.country, report["problems"])
        scopes = report["scopeFacts"]
        assert set(scopes) >= {"page", "dedicated worker", "blob worker", "shared worker", "service worker",
                               "iframe about:blank", "iframe srcdoc", "iframe same-origin", "popup",
                               "popup about:blank"}
        for name, data in scopes.items():
            if name == "pageHeaders":
                continue
            facts = data if name == "page" else data["facts"]
            assert facts["userAgent"] == ident.user_agent, name
            assert facts["languages"] == ident.languages and facts["platform"] == ident.platform, name
            assert facts["hardwareConcurrency"] == ident.hardware_concurrency, name
            assert facts["deviceMemory"] == ident.device_memory and facts["timezone"] == ident.timezone, name
            assert [b["brand"] for b in facts["brands"]] == [b.brand for b in ident.brands], name
            assert facts["high"]["platformVersion"] == ident.ch_platform_version, name
        assert scopes["page"]["notification"] == "default"
        assert scopes["page"]["permissions"]["notifications"] == "prompt"
        assert scopes["pageHeaders"]["accept-language"] == ident.accept_language


def test_fingerprints_are_stable_within_an_identity_and_differ_across(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path, sessions={"mode": "session", "max_sessions": 1, "max_uses": 10})
        await rt.start()
        try:
            kept = [await rt.run(lambda p, u: _report(p, u), f"{site.url}/identity.html", f"s{i}") for i in range(3)]
        finally:
            await rt.close()
        rt2 = _runtime(tmp_path, index=1)
        await rt2.start()
        try:
            rotated = [await rt2.run(lambda p, u: _report(p, u), f"{site.url}/identity.html", f"r{i}")
                       for i in range(3)]
        finally:
            await rt2.close()
        return kept, rotated

    kept, rotated = _run(scenario())
    same = {(r["facts"]["canvas"], r["facts"]["audio"], ident.id) for r, ident in kept}
    assert len(same) == 1, "one identity must show the same canvas/audio fingerprint in every context"
    prints = {(r["facts"]["canvas"], r["facts"]["audio"]) for r, _ in rotated + kept[:1]}
    assert len({c for c, _ in prints}) == 4 and len({a for _, a in prints}) == 4


def test_open_source_bot_detection_does_not_flag_us(site, tmp_path):
    async def scenario(**opts):
        rt = _runtime(tmp_path, **opts)
        await rt.start()
        try:
            return [await rt.run(lambda p, u: _report(p, u, "botResults"), f"{site.url}/botdetect/check.html", f"b{i}")
                    for i in range(6)]
        finally:
            await rt.close()

    for report, ident in _run(scenario()):
        assert report["errors"] == []
        assert report["botd"]["bot"] is False, (ident.os, report["botd"])
        flagged = {k for k, v in report["fpscanner"]["details"].items() if v}
        assert report["fpscanner"]["bot"] is False and not flagged, (ident.os, flagged)
    # control: the same scripts do catch a plain headless Chromium, so they are live
    plain = _run(scenario(identity={"enabled": False}))
    for report, _ in plain:
        assert report["botd"]["bot"] is True
        assert report["fpscanner"]["bot"] is True


def test_sessions_carry_cookies_between_tasks_and_rotation_does_not(site, tmp_path):
    async def set_cookie(page, url):
        await page.goto(url)
        await page.evaluate("document.cookie = 'sid=abc123; path=/; max-age=3600'")
        return CURRENT_TASK.get().identity.id

    async def read_cookie(page, url):
        await page.goto(url)
        return await page.evaluate("document.cookie"), CURRENT_TASK.get().identity.id

    async def scenario(mode, index):
        rt = _runtime(tmp_path, index=index, sessions={"mode": mode, "max_sessions": 1,
                                                      "persist_dir": str(tmp_path / "sessions")})
        await rt.start()
        try:
            first = await rt.run(set_cookie, f"{site.url}/login", "login")
            cookie, second = await rt.run(read_cookie, f"{site.url}/account", "account")
            return first, second, cookie
        finally:
            await rt.close()

    first, second, cookie = _run(scenario("session", 0))
    assert first == second and "sid=abc123" in cookie
    saved = list((tmp_path / "sessions" / "shop" / "0").glob("*.json"))
    assert len(saved) == 1 and "abc123" in saved[0].read_text()
    first, second, cookie = _run(scenario("rotate", 1))
    assert first != second and "sid=abc123" not in cookie


def test_a_kept_session_keeps_its_context_cache_and_tabs_and_identities_stay_apart(site, tmp_path):
    """mode: session with tasks_per_session: one live context per session serves its tasks as tabs
    (HTTP cache and cookies kept, tabs reused, the slot's listeners gone from a reused tab); another
    session has its own cache and cookies; keep_context: false is a fresh context per task."""
    async def visit(page, url):
        await page.goto(url)
        task = CURRENT_TASK.get()
        return (task.identity.id, task.session_id, await page.evaluate("document.cookie"),
                await page.evaluate("navigator.userAgent"), id(page))

    async def set_cookie(page, url):
        await page.goto(url)
        await page.evaluate("document.cookie = 'sid=' + Math.random() + '; path=/; max-age=3600'")
        return await page.evaluate("document.cookie")

    async def scenario(sessions, index):
        rt = _runtime(tmp_path, index=index, sessions=sessions)
        await rt.start()
        try:
            cookie = await rt.run(set_cookie, f"{site.url}/login", "login")
            sem = asyncio.Semaphore(3)

            async def one(i):
                async with sem:
                    return await rt.run(visit, f"{site.url}/cached.html?i={i}", f"t{i}")

            out = await asyncio.gather(*(one(i) for i in range(9)))
            page_listeners = [len(p._impl_obj._events.get("console", [])) for live in rt.live.values()
                              for p in live.idle_pages]
            registered = len(rt.host.shared_workers.contexts)  # contexts known for their shared workers
            return cookie, out, dict(rt.counters), page_listeners, {**rt.snapshot(), "registered": registered}
        finally:
            await rt.close()

    before = len([1 for path, _ in site.requests if path.startswith("/cached.css")])
    cookie, out, counters, listeners, snap = _run(scenario({"mode": "session", "tasks_per_session": 3,
                                                            "max_sessions": 1}, 0))
    css = len([1 for path, _ in site.requests if path.startswith("/cached.css")]) - before
    assert {o[1] for o in out} == {out[0][1]} and {o[0] for o in out} == {out[0][0]}  # one session, one identity
    assert all(o[2] == cookie for o in out)  # its cookie in every task
    assert css == 1, "the kept context's HTTP cache serves the stylesheet after the first fetch"
    assert counters["contexts.kept"] == 1 and counters["pages.reused"] >= 6 and len({o[4] for o in out}) <= 3
    assert listeners and all(n == 0 for n in listeners), "a reused tab carries no listener of an earlier task"
    assert snap["contexts_live"] == 1 and snap["registered"] == 1

    # another runtime's session (another identity): its own cache, no cookie of the first
    before = len([1 for path, _ in site.requests if path.startswith("/cached.css")])
    cookie2, out2, _, _, _ = _run(scenario({"mode": "session", "tasks_per_session": 3, "max_sessions": 1}, 1))
    assert len([1 for path, _ in site.requests if path.startswith("/cached.css")]) - before == 1
    assert out2[0][0] != out[0][0] and cookie2 != cookie and all(cookie not in o[2] for o in out2)

    # keep_context: false: a fresh context per task (cookie carried, cache not)
    before = len([1 for path, _ in site.requests if path.startswith("/cached.css")])
    cookie3, out3, counters3, _, snap3 = _run(scenario({"mode": "session", "max_sessions": 1, "tasks_per_session": 3,
                                                        "keep_context": False}, 2))
    assert snap3["registered"] == 0 and snap3["contexts_live"] == 0  # closed contexts leave nothing behind
    assert all(o[2] == cookie3 for o in out3) and counters3["contexts.fresh"] == 10
    assert len([1 for path, _ in site.requests if path.startswith("/cached.css")]) - before == 9


# -- proxies -------------------------------------------------------------------------------------------
def test_traffic_goes_through_the_authenticating_proxy(site, tmp_path):
    with AuthProxy("alice", SECRET, hosts={"shop.test": ("127.0.0.1", site.port)}) as proxy:
        async def scenario():
            rt = _runtime(tmp_path, proxies=[{"url": proxy.url, "username": "alice", "password": SECRET}])
            await rt.start()
            try:
                return [await rt.run(_title, f"http://shop.test/p{i}", f"t{i}") for i in range(3)]
            finally:
                await rt.close()

        titles = _run(scenario())
    # shop.test resolves nowhere but in the proxy: the pages could only come through it
    assert titles == ["Hello /p0", "Hello /p1", "Hello /p2"]
    assert {r.path for r in proxy.authenticated("alice")} >= {"/p0", "/p1", "/p2"}
    assert all(h.get("via") == "1.1 fleet-auth-proxy" for p, h in site.requests if p.startswith("/p"))


def test_wrong_password_is_a_typed_proxy_auth_error_that_quarantines(site, tmp_path):
    with AuthProxy("alice", SECRET, hosts={"shop.test": ("127.0.0.1", site.port)}) as proxy:
        async def scenario():
            rt = _runtime(tmp_path, proxies=[{"url": proxy.url, "username": "alice", "password": "wrong-" + SECRET}])
            await rt.start()
            try:
                with pytest.raises(ProxyAuthError) as err:
                    await rt.run(_title, "http://shop.test/", "bad")
                return err.value, rt.proxies.snapshot(), rt.snapshot()
            finally:
                await rt.close()

        error, proxies, snap = _run(scenario())
    assert proxies[0]["health"] == "quarantined" and proxies[0]["last_outcome"] == "auth_failed"
    assert not proxy.authenticated()
    assert "407" in str(error) and "slot shop:0" in str(error)
    everything = str(error) + json.dumps(snap) + "".join(p.read_text(errors="replace")
                                                         for p in (tmp_path / "logs").rglob("*.json"))
    assert SECRET not in everything and "alice" not in everything


def test_blocked_and_dead_proxies_are_rotated_away_from(site, tmp_path):
    hosts = {"shop.test": ("127.0.0.1", site.port)}
    with AuthProxy("u", SECRET, hosts=hosts, block=429) as blocked, AuthProxy("u", SECRET, hosts=hosts) as good:
        dead_port = good.port + 1 if good.port + 1 not in (blocked.port,) else good.port + 2

        async def scenario():
            rt = _runtime(
                tmp_path,
                proxies=[
                    {"url": blocked.url, "username": "u", "password": SECRET, "label": "blocked"},
                    {"url": f"http://127.0.0.1:{dead_port}", "username": "u", "password": SECRET, "label": "dead"},
                    {"url": good.url, "username": "u", "password": SECRET, "label": "good"},
                ],
                proxy_policy={"failure_threshold": 1, "cooldown_s": 300, "quarantine_after": 1},
                max_attempts=4,
            )
            await rt.start()
            try:
                titles = [await rt.run(_title, f"http://shop.test/x{i}", f"t{i}") for i in range(4)]
                return titles, rt.proxies.snapshot(), dict(rt.counters)
            finally:
                await rt.close()

        titles, proxies, counters = _run(scenario())
    assert titles == [f"Hello /x{i}" for i in range(4)]
    by_label = {p["proxy"]: p for p in proxies}
    assert by_label["good"]["health"] == "healthy" and by_label["good"]["successes"] == 4
    assert by_label["blocked"]["health"] == "quarantined" and by_label["blocked"]["last_outcome"] == "reputation"
    assert by_label["dead"]["health"] == "quarantined" and by_label["dead"]["last_outcome"] == "connect_failed"
    assert counters["recovery.rotate_identity"] >= 1 and counters["recovery.rotate_proxy"] >= 1


def test_socks5_proxies_carry_the_traffic_and_a_dead_one_is_a_typed_proxy_error(site, tmp_path):
    hosts = {"shop.test": ("127.0.0.1", site.port)}
    with Socks5Proxy(hosts=hosts) as socks:
        with Socks5Proxy(hosts=hosts) as doomed:  # its port (not socks's) has no listener once it stops
            dead_url = doomed.url
        async def scenario():
            rt = _runtime(
                tmp_path,
                proxies=[{"url": dead_url, "label": "dead"}, {"url": socks.url, "label": "socks"}],
                proxy_policy={"failure_threshold": 1, "cooldown_s": 300, "quarantine_after": 1},
            )
            await rt.start()
            try:
                titles = [await rt.run(_title, f"http://shop.test/s{i}", f"t{i}") for i in range(3)]
                return titles, {p["proxy"]: p for p in rt.proxies.snapshot()}, dict(rt.counters)
            finally:
                await rt.close()

        titles, proxies, counters = _run(scenario())
    # shop.test resolves only inside the proxy: Chromium sent it the name, the proxy connected
    assert titles == ["Hello /s0", "Hello /s1", "Hello /s2"]
    assert sum(1 for r in socks.records if (r.host, r.status) == ("shop.test", 200)) >= 3
    assert {p for p, _h in site.requests} >= {"/s0", "/s1", "/s2"}
    assert proxies["socks"]["health"] == "healthy" and proxies["socks"]["successes"] == 3
    # the least-used proxy is drawn next, so the dead one was tried: a typed error, rotated away from
    assert counters["error.ProxyError"] >= 1 and counters["recovery.rotate_proxy"] >= 1
    assert proxies["dead"]["health"] == "quarantined" and proxies["dead"]["last_outcome"] == "connect_failed"


def test_a_403_and_a_challenge_page_are_typed_blocks_that_rotate_the_identity(site, tmp_path):
    from fleet_ray.errors import BlockedError

    async def scenario():
        rt = _runtime(tmp_path, max_attempts=2)
        await rt.start()
        try:
            out = {}
            for path in ("/forbidden", "/challenge.html"):
                try:
                    await rt.run(_title, f"{site.url}{path}", path)
                except BlockedError as exc:
                    out[path] = str(exc)
            out["ok"] = await rt.run(_title, f"{site.url}/fine", "fine")  # the slot keeps serving
            return out, dict(rt.counters)
        finally:
            await rt.close()

    out, counters = _run(scenario())
    assert "HTTP 403" in out["/forbidden"] and "2 attempt(s)" in out["/forbidden"]
    assert "captcha/challenge (.cf-turnstile)" in out["/challenge.html"]
    assert out["ok"] == "Hello /fine"
    assert counters["error.BlockedError"] == 4 and counters["recovery.rotate_identity"] == 2


def test_blocked_resource_types_never_load(site, tmp_path):
    async def scenario(block):
        rt = _runtime(tmp_path, block_resources=block)
        await rt.start()
        try:
            return await rt.run(_title, f"{site.url}/img.html", "img")
        finally:
            await rt.close()

    assert _run(scenario(["image", "font", "media"])) == "img"
    assert not [p for p, _ in site.requests if p == "/pixel.png"]
    _run(scenario([]))
    assert [p for p, _ in site.requests if p == "/pixel.png"]


# -- recycling, crashes, hangs ---------------------------------------------------------------------------
def test_browser_recycles_after_n_pages_and_old_processes_go(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path, pages_per_browser=3)
        await rt.start()
        try:
            first = rt.host.processes()
            titles = [await rt.run(_title, f"{site.url}/r{i}", f"r{i}") for i in range(7)]
            return titles, rt.host.snapshot(), first, rt.host.tag
        finally:
            await rt.close()

    titles, snap, first, tag = _run(scenario())
    assert titles == [f"Hello /r{i}" for i in range(7)]
    assert snap["launches"] == 3 and snap["recycles"] == {"pages": 2}
    assert first and not _alive(first)
    assert not tag.processes()


def test_browser_above_its_rss_limit_is_recycled(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path, max_browser_rss_mb=1, watchdog_interval_s=0.3)
        await rt.start()
        try:
            deadline = time.monotonic() + 60
            while rt.host.snapshot()["recycles"].get("rss", 0) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            title = await rt.run(_title, f"{site.url}/still-serving", "after-rss")
            return rt.host.snapshot(), title
        finally:
            await rt.close()

    snap, title = _run(scenario())
    assert snap["recycles"].get("rss", 0) >= 1 and snap["launches"] >= 2
    assert title == "Hello /still-serving"


def test_crashes_recycle_the_browser_and_the_slot_keeps_serving(site, tmp_path):
    async def crash_once(page, url):
        if CURRENT_TASK.get().attempt == 1:
            await page.goto("chrome://crash")
        return await _title(page, url)

    async def scenario():
        rt = _runtime(tmp_path)
        await rt.start()
        try:
            renderer = await rt.run(crash_once, f"{site.url}/after-crash", "crash")
            launches = rt.host.launches
            kill = rt.host.processes()
            for p in kill:  # the whole browser dies between tasks
                p.send_signal(signal.SIGKILL)
            after_kill = await rt.run(_title, f"{site.url}/after-kill", "next")
            return renderer, launches, after_kill, rt.host.snapshot(), dict(rt.counters)
        finally:
            await rt.close()

    renderer, launches, after_kill, snap, counters = _run(scenario())
    assert renderer == "Hello /after-crash" and counters["error.BrowserCrashed"] >= 1
    assert launches == 2, "a renderer crash recycles the browser"
    assert after_kill == "Hello /after-kill"
    assert snap["launches"] >= 3


def test_hung_pages_and_a_hung_browser_are_detected(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path, task_timeout_s=3, max_attempts=2, watchdog_interval_s=0.5, ping_timeout_s=2,
                      close_timeout_s=2)
        await rt.start()
        try:
            with pytest.raises(BrowserHung) as hung:
                await rt.run(_title, f"{site.url}/hang.html", "hang")
            ok = await rt.run(_title, f"{site.url}/fine", "fine")
            launches = rt.host.launches
            main = [p for p in rt.host.processes() if _cmdline(p) and "--type=" not in _cmdline(p)]
            os.kill(main[0].pid, signal.SIGSTOP)  # Chromium stops answering
            deadline = time.monotonic() + 20
            while rt.host.launches == launches and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            relaunched = rt.host.launches > launches
            again = await rt.run(_title, f"{site.url}/again", "again")
            return hung.value, ok, relaunched, again, main[0]
        finally:
            await rt.close()

    hung, ok, relaunched, again, stopped = _run(scenario())
    assert "task_timeout_s" in str(hung) and "slot shop:0" in str(hung)
    assert ok == "Hello /fine"
    assert relaunched, "the watchdog must kill and relaunch a browser that does not answer"
    assert again == "Hello /again"
    assert not _alive([stopped])


# -- phases and artifacts --------------------------------------------------------------------------------
def test_phase_timeout_names_the_phase_and_slot_and_leaves_artifacts(site, tmp_path):
    ctx = BrowserSlotContext(SlotIdentity("shop", 0, 1), NoConfig())

    async def visit(page, url):
        async with ctx.phase("open", timeout=1.5):
            await page.goto(url)
        return "unreachable"

    async def bug(page, url):
        async with ctx.phase("extract"):
            await page.goto(url)
            raise KeyError("price")

    async def scenario():
        rt = _runtime(tmp_path, max_attempts=1)
        await rt.start()
        try:
            with pytest.raises(PhaseTimeout) as timeout:
                await rt.run(visit, f"{site.url}/slow.html", "job1-item7")
            with pytest.raises(AutomationError) as failed:
                await rt.run(bug, f"{site.url}/fine", "job1-item8")
            return timeout.value, failed.value
        finally:
            await rt.close()

    timeout, failed = _run(scenario())
    assert timeout.phase == "open" and "'open'" in str(timeout) and "shop:0" in str(timeout)
    assert "KeyError" in str(failed) and "phase 'extract'" in str(failed) and "slot shop:0" in str(failed)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    folder = tmp_path / "logs" / day / "shop" / "0"
    names = {p.name for p in folder.iterdir()}
    for suffix in (".png", ".trace.zip", ".console.log", ".json"):
        assert f"job1-item7-a1-open{suffix}" in names, names
    assert "job1-item8-a1-extract.json" in names
    assert "hello from the page" in (folder / "job1-item7-a1-open.console.log").read_text()
    record = json.loads((folder / "job1-item7-a1-open.json").read_text())
    assert record["phase"] == "open" and record["error_type"] == "PhaseTimeout" and record["slot"] == 0
    assert (folder / "job1-item7-a1-open.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_memory_stays_flat_over_hundreds_of_pages(site, tmp_path):
    async def scenario():
        rt = _runtime(tmp_path, pages_per_browser=50)
        await rt.start()
        me = psutil.Process()
        samples = []
        try:
            sem = asyncio.Semaphore(4)

            async def one(i):
                async with sem:
                    return await rt.run(_title, f"{site.url}/m{i}", f"m{i}")

            for batch in range(6):
                titles = await asyncio.gather(*(one(batch * 50 + i) for i in range(50)))
                assert len(titles) == 50
                samples.append((me.memory_info().rss / 2**20, rt.host.rss_mb(), rt.host.launches))
            return samples
        finally:
            await rt.close()

    samples = _run(scenario())
    driver = [s[0] for s in samples]
    browser = [s[1] for s in samples]
    assert samples[-1][2] >= 6  # recycled every 50 pages
    # the Python side may warm up in the first batches, then must not keep growing
    assert max(driver[2:]) - driver[1] < 40, driver
    # each fresh Chromium starts from the same footprint: no growth across recycles
    assert max(browser[2:]) < 1.5 * max(browser[:2]) + 50, browser
