"""The webhook and Telegram notifiers against a real HTTP server on 127.0.0.1 (no Ray needed)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet_ray.errors import NotifyError
from fleet_ray.observe.grouping import ErrorGrouper, FailureRecord
from fleet_ray.observe.notify import Notification, NotifyConfig, Reporter, TelegramNotifier, WebhookNotifier

TOKEN = "123456:SECRET-bot-token"


class Inbox:
    """A loopback HTTP server that records every request (path, JSON body) and answers ``status``."""

    def __init__(self, status: int = 200):
        self.requests: list[tuple[str, dict]] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                inbox.hold.wait(30)
                inbox.requests.append((self.path, body))
                self.send_response(inbox.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


def wait_for(fn, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not fn():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


NOTE = Notification(kind="new", title="[fleet] new error: ValueError", text="ValueError @ acme.parse:3\n10 failure(s)")


def test_webhook_posts_the_notification_as_json(inbox):
    WebhookNotifier(f"{inbox.url}/hooks/abc").send(NOTE)
    path, body = inbox.requests[0]
    assert path == "/hooks/abc" and body["kind"] == "new" and body["title"] == NOTE.title and "10 failure" in body["text"]


def test_telegram_calls_send_message_on_the_configured_bot_api(inbox):
    TelegramNotifier(TOKEN, "-1001", base_url=inbox.url).send(NOTE)
    path, body = inbox.requests[0]
    assert path == f"/bot{TOKEN}/sendMessage"
    assert body["chat_id"] == "-1001" and body["text"].startswith(NOTE.title) and "acme.parse:3" in body["text"]


def test_delivery_errors_never_show_the_token(inbox):
    inbox.status = 500
    with pytest.raises(NotifyError) as info:
        TelegramNotifier(TOKEN, "1", base_url=inbox.url).send(NOTE)
    assert "HTTP 500" in str(info.value) and "SECRET" not in str(info.value)
    closed = Inbox()
    closed.close()  # nothing listens there any more: connection refused
    with pytest.raises(NotifyError) as info:
        TelegramNotifier(TOKEN, "1", base_url=closed.url).send(NOTE)
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.__cause__)


def test_ten_slots_failing_alike_reach_the_webhook_as_one_message(inbox):
    rep = Reporter(NotifyConfig(webhook_url=f"{inbox.url}/hook", window_s=0.5, digest_s=3600), tick_s=0.05)
    groups = ErrorGrouper()
    try:
        for i in range(10):
            g, _ = groups.add(FailureRecord(error_type="ProbeError", frame="acme.check:7", message="refused",
                                            pool="web", slot=f"web:{i}", phase="fetch", at=time.time()))
            rep.report(g)
        wait_for(lambda: len(inbox.requests) == 1)
        deadline = time.monotonic() + 1.5  # a storm would show as more requests within this window
        while time.monotonic() < deadline:
            assert len(inbox.requests) == 1
            time.sleep(0.05)
        _, body = inbox.requests[0]
        assert body["kind"] == "new" and body["groups"][0]["count"] == 10
        assert body["groups"][0]["slots"] == sorted(f"web:{i}" for i in range(10))
    finally:
        rep.close()


def test_reporting_never_blocks_on_a_hung_endpoint(inbox):
    inbox.hold.clear()  # the endpoint accepts the request and then hangs
    rep = Reporter(NotifyConfig(webhook_url=f"{inbox.url}/hook", window_s=0, max_per_minute=100), tick_s=0.02)
    groups = ErrorGrouper()
    try:
        g, _ = groups.add(FailureRecord(error_type="E", frame="f:1", at=time.time()))
        rep.report(g)
        wait_for(lambda: rep.gate._notified_count)  # the first message is on its way and stuck
        for i in range(200):  # the fleet keeps reporting while delivery hangs: every call returns
            g, _ = groups.add(FailureRecord(error_type="E", frame=f"f:{i + 2}", at=time.time()))
            rep.report(g)
        assert inbox.requests == []  # still hung: the reports above did not wait for it
    finally:
        inbox.hold.set()
        rep.close()
