"""The web dashboard in real headless Chromium (Playwright, system /usr/bin/chromium): it shows the slots
of a running fleet, live events once the token is set (asked for in a prompt), and recycling one from
the page makes the slot's generation go up. A screenshot is saved under the test's tmp_path."""

from __future__ import annotations

import os
import re
import uuid

import pytest

pytestmark = pytest.mark.browser

# Serve kills an HTTP proxy that isn't ready within 5 s, and serve.start() then fails; on a loaded shared
# machine a fresh worker process can take longer than that to start. Set before the module's cluster starts.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

TOKEN = "dash-" + uuid.uuid4().hex
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-gpu", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def dashboard_url(cluster, tmp_path_factory):
    from ray import serve

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient
    from fleet_ray.serve.deploy import start_api, stop_api
    from fleet_ray.serve.testing import free_port, wait_ready

    ns = f"dash-{uuid.uuid4().hex[:8]}"
    store = tmp_path_factory.mktemp("dash") / "store.db"
    fleet = FleetClient(start_supervisor(f"sqlite://{store}", namespace=ns, tick_s=0.05), ns)
    fleet.apply({"pools": [{"name": "web", "automation": "builtin.echo", "slots": 3,
                            "health": {"period_s": 0.2}, "recycle": {"drain_timeout_s": 2}}]})
    fleet.wait_ready(90)
    url = start_api(namespace=ns, port=free_port(), token=TOKEN, status_ttl_s=0.2)
    wait_ready(url)
    yield url
    stop_api(ns)
    serve.shutdown()
    try:
        fleet.down(timeout_s=5)
    except Exception:
        pass


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()


def test_dashboard_shows_slots_and_recycles_one_from_the_page(dashboard_url, page, tmp_path):
    from playwright.sync_api import expect

    prompts: list[str] = []

    def on_dialog(dialog):
        prompts.append(dialog.message)
        dialog.accept(TOKEN if "token" in dialog.message.lower() else "")

    page.on("dialog", on_dialog)
    refused: list[str] = []  # the page's Content-Security-Policy must not block any of its own parts
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{dashboard_url}/")
    expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
    rows = page.locator("tr[data-slot]")
    expect(rows).to_have_count(3, timeout=30_000)
    for i in range(3):
        row = page.locator(f'tr[data-slot="web:{i}"]')
        expect(row.locator(".state")).to_have_text("running")
        expect(row.locator(".gen")).to_have_text("1")
        expect(row.locator(".node")).not_to_have_text("-")
    expect(page.locator('.pool[data-pool="web"] .pstate-ok')).to_have_text("ok")
    # live events and grouped errors need the token: the page says so until one is set
    expect(page.locator("#events-state")).to_contain_text("set a token", timeout=15_000)
    page.locator("#token-btn").click()
    assert prompts and "token" in prompts[0].lower()  # the page asked for the token
    # live events arrived over SSE, nodes are listed with their tags
    expect(page.locator("#events li").first).to_be_visible(timeout=15_000)
    expect(page.locator("#events-state")).to_have_text("(live)")
    expect(page.locator("#nodes")).to_contain_text("browser=4")

    page.locator('tr[data-slot="web:1"] button.recycle').click()
    expect(page.locator("#notice")).to_contain_text("web:1", timeout=15_000)
    expect(page.locator('tr[data-slot="web:1"] .gen')).to_have_text("2", timeout=60_000)
    expect(page.locator('tr[data-slot="web:1"] .state')).to_have_text("running", timeout=60_000)
    expect(page.locator('tr[data-slot="web:1"] .recycles')).to_have_text("1")
    expect(page.locator('tr[data-slot="web:0"] .gen')).to_have_text("1")
    expect(page.locator("#events")).to_contain_text(re.compile(r"slot\.recycled\s+web:1"), timeout=15_000)
    # a second action reuses the token from this tab: no new prompt
    page.locator('tr[data-slot="web:2"] button.recycle').click()
    expect(page.locator('tr[data-slot="web:2"] .gen')).to_have_text("2", timeout=60_000)
    assert len(prompts) == 1
    expect(page.locator("#chart-tasks svg")).to_be_visible(timeout=15_000)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not refused, refused
    print(f"dashboard screenshot: {shot}")


def test_dashboard_shows_an_invalid_spec_error_and_a_wrong_token(dashboard_url, page):
    from playwright.sync_api import expect

    answers = iter(["wrong-token", TOKEN])
    page.on("dialog", lambda d: d.accept(next(answers)))
    page.goto(f"{dashboard_url}/")
    expect(page.locator("tr[data-slot]")).to_have_count(3, timeout=30_000)
    page.fill("#spec-text", '{"pools": [{"name": "web", "automation": "builtin.echo", "slots": -1}]}')
    page.click("button[data-action=apply]")
    expect(page.locator("#apply-result")).to_contain_text("wrong token", timeout=15_000)
    page.click("button[data-action=apply]")  # the wrong token was forgotten; asked again
    expect(page.locator("#apply-result")).to_contain_text("pools.web.slots", timeout=15_000)
    expect(page.locator('.pool[data-pool="web"] .desired')).to_have_text("3")
