"""fleet_ray.redact: every secret shape it knows, property-based where a generated password fits."""

from __future__ import annotations

import io
import json
import logging
import string
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet_ray.redact import (
    MASK,
    RedactingFilter,
    is_secret_key,
    redact_json_bytes,
    redact_text,
    redact_tree,
    redact_url,
    restore_masked,
)

# a password as people type them: printable, no whitespace; '/', '?' and '#' must be percent-encoded in
# a URL (RFC 3986; clients split there too), '@' and ':' need not be
URL_PASSWORD = st.text(alphabet=sorted(set(string.printable) - set(string.whitespace) - set("/?#")),
                       min_size=1, max_size=24)
ANY_PASSWORD = st.text(alphabet=sorted(set(string.printable) - set(string.whitespace)), min_size=4, max_size=24)
USER = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
SCHEME = st.sampled_from(["http", "https", "redis", "rediss", "socks5", "postgresql+psycopg"])
HOST = st.sampled_from(["10.0.0.1", "proxy.example.com", "h", "[::1]"])
PORT = st.integers(1, 65535)


# -- URLs ------------------------------------------------------------------------------------------
def test_password_with_an_at_sign_is_hidden_whole():
    assert redact_url("redis://default:Zq@9xLr2@h:6379/0") == "redis://***@h:6379/0"
    assert redact_url("lost redis://default:Zq@9xLr2@h") == "lost redis://***@h"
    assert redact_url("http://h/p?u=a@b") == "http://h/p?u=a@b"  # an '@' after the path is no user-info


@settings(max_examples=150, deadline=None)
@given(SCHEME, USER, URL_PASSWORD, HOST, PORT)
def test_a_generated_url_password_never_survives(scheme, user, password, host, port):
    url = f"{scheme}://{user}:{password}@{host}:{port}/0"
    assert redact_text(f"store {url} unreachable") == f"store {scheme}://***@{host}:{port}/0 unreachable"
    out = redact_tree({"store": url, "nested": [{"url": url}]})
    assert out == {"store": f"{scheme}://***@{host}:{port}/0", "nested": [{"url": f"{scheme}://***@{host}:{port}/0"}]}
    body = json.loads(redact_json_bytes(json.dumps({"message": f"cannot reach {url}", "n": 1}).encode()))
    assert body == {"message": f"cannot reach {scheme}://***@{host}:{port}/0", "n": 1}


# -- credentials without a scheme ------------------------------------------------------------------
def test_bare_user_password_host_port():
    assert redact_text("proxy bob:s3cret@10.0.0.1:8080 refused") == "proxy ***@10.0.0.1:8080 refused"
    assert redact_text("proxies=bob:a@b@p.example.com:3128,") == "proxies=***@p.example.com:3128,"
    assert redact_text("at 12:30:01 see mail bob@example.com") == "at 12:30:01 see mail bob@example.com"


@settings(max_examples=150, deadline=None)
@given(USER, ANY_PASSWORD, HOST, PORT)
def test_a_generated_bare_password_never_survives(user, password, host, port):
    assume(not password.startswith("//"))  # user://… reads as a URL, shown as scheme://***@host
    out = redact_text(f"proxy {user}:{password}@{host}:{port} failed")
    assert out == f"proxy ***@{host}:{port} failed"


# -- tokens in paths, headers and well-known formats -----------------------------------------------
def test_tokens_in_url_paths_and_headers():
    tg = "https://api.telegram.org/bot123456789:AAH-abcdefghijklmnopqrstuvwxyz012345/sendMessage"
    assert redact_text(f"POST {tg} failed") == "POST https://api.telegram.org/bot***/sendMessage failed"
    assert redact_text("token 123456789:AAH-abcdefghijklmnopqrstuvwxyz012345 rejected") == "token *** rejected"
    slack = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX"
    assert redact_text(f"webhook {slack}: 404") == "webhook https://hooks.slack.com/services/***: 404"
    assert "XXXX" not in redact_text("https://discord.com/api/webhooks/123/XXXXtoken")
    assert redact_text("Authorization: Basic dXNlcjpwYXNz") == "Authorization: ***"
    assert redact_text("sent Bearer abc.def-123456") == "sent Bearer ***"
    assert redact_text("slack xoxb-1234-5678-abcdefgh said no") == "slack *** said no"
    assert redact_text("https://shop.example/bottles/12") == "https://shop.example/bottles/12"


@settings(max_examples=100, deadline=None)
@given(st.integers(10_000, 10**10), st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=8,
                                             max_size=40))
def test_a_generated_telegram_token_never_survives(bot, secret):
    out = redact_text(f"https://api.telegram.org/bot{bot}:{secret}/getUpdates")
    assert out == "https://api.telegram.org/bot***/getUpdates"


# -- key=value in free text (Pydantic's input echo) -------------------------------------------------
def test_secret_pairs_in_free_text():
    echo = "input_value={'url': 'http://h:1', 'password': 'hunter2', 'max_tokens': 5}"
    assert redact_text(echo) == "input_value={'url': 'http://h:1', 'password': '********', 'max_tokens': 5}"
    assert redact_text("GET /x?token=abc&page=2") == "GET /x?token=********&page=2"
    assert redact_text("max_tokens=512 keys=a,b") == "max_tokens=512 keys=a,b"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=string.printable, min_size=6, max_size=24),
       st.sampled_from(["password", "api_key", "token", "pwd", "secret", "cookie", "session", "key"]))
def test_a_generated_secret_in_a_repr_never_survives(secret, key):
    text = repr({"url": "http://h:1", key: secret, "slots": 2})
    assume(secret not in repr({"url": "http://h:1", key: "", "slots": 2}))
    assert secret not in redact_text(text)


# -- secret keys -----------------------------------------------------------------------------------
def test_secret_keys_and_harmless_look_alikes():
    for k in ["key", "pwd", "cookie", "cookies", "session", "bearer", "webhook", "webhook_url", "api_key",
              "api_keys", "apiKey", "token", "tokens", "access_token", "password", "proxyUser", "session_id"]:
        assert is_secret_key(k), k
    for k in ["keys", "max_tokens", "token_ttl_s", "max_sessions", "session_timeout_s", "token_file",
              "user_agent", "users", "sort_key", "signature", "author", "bypass", "timeout_s"]:
        assert not is_secret_key(k), k


def test_lists_under_secret_keys_are_masked_item_by_item():
    found: list[str] = []
    tree = {"tokens": ["t-1", "t-2"], "api_keys": ["k"], "key": "k0", "pwd": 1234,
            "cookies": [{"name": "sid", "value": "c00kie", "domain": "example.com"}],
            "keys": ["web", "crawl"], "max_tokens": 512, "sessions": {"mode": "session", "max_sessions": 3}}
    out = redact_tree(tree, "", found)
    assert out == {"tokens": [MASK, MASK], "api_keys": [MASK], "key": MASK, "pwd": MASK,
                   "cookies": [{"name": "sid", "value": MASK, "domain": "example.com"}],
                   "keys": ["web", "crawl"], "max_tokens": 512, "sessions": {"mode": "session", "max_sessions": 3}}
    assert found == ["tokens[0]", "tokens[1]", "api_keys[0]", "key", "pwd", "cookies[0].value"]


@settings(max_examples=100, deadline=None)
@given(ANY_PASSWORD)
def test_a_generated_password_never_survives_redact_tree(password):
    def tree_of(secret: str) -> dict:
        return {"pools": [{"name": "web", "config": {"password": secret, "tokens": [secret],
                                                     "auth": {"bearer": secret}, "note": f"pwd={secret}"}}]}

    tree = tree_of(password)
    # the redacted document's own text (keys, masks): a "password" like "toke" is in "tokens" anyway
    skeleton = json.dumps(redact_tree(tree_of("x"))) + json.dumps(tree_of(""))
    assume(password not in skeleton and password not in "pwd=" + MASK)
    assume(password[0] not in "'\"" and "&" not in password)  # an unquoted value runs to whitespace or '&'
    assert password not in json.dumps(redact_tree(tree))
    assert password.encode() not in redact_json_bytes(json.dumps(tree).encode())


# -- a masked tree sent back keeps the current values ----------------------------------------------
def test_restore_masked_keeps_current_secrets():
    current = {"pools": [{"name": "a", "config": {"password": "p-a", "upstream": "http://u:pw@h:1/x"}},
                         {"name": "b", "browser": {"proxies": [{"url": "http://p1:1", "username": "u1",
                                                                "password": "s1"},
                                                               {"url": "http://p2:2", "username": "u2",
                                                                "password": "s2"}]}}]}
    shown = redact_tree(current)
    # reorder pools and proxies, change one password, keep the rest masked
    shown["pools"].reverse()
    shown["pools"][0]["browser"]["proxies"].reverse()
    shown["pools"][0]["browser"]["proxies"][1]["password"] = "new"
    unresolved: list[str] = []
    back = restore_masked(shown, current, "", unresolved)
    assert unresolved == []
    assert back["pools"][1]["config"] == {"password": "p-a", "upstream": "http://u:pw@h:1/x"}
    assert back["pools"][0]["browser"]["proxies"] == [
        {"url": "http://p2:2", "username": "u2", "password": "s2"},
        {"url": "http://p1:1", "username": "u1", "password": "new"}]


def test_restore_masked_reports_a_mask_with_nothing_to_keep():
    unresolved: list[str] = []
    back = restore_masked({"pools": [{"name": "new", "config": {"password": MASK}}]}, {"pools": []}, "", unresolved)
    assert unresolved == ["pools[0].config.password"] and back["pools"][0]["config"]["password"] == MASK


# -- logs ------------------------------------------------------------------------------------------
def test_log_records_are_redacted_before_formatting():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test_redact.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("store %s lost", "redis://default:Zq@9xLr2@h:6379")
        try:
            raise ValueError("input_value={'password': 'hunter2'}")
        except ValueError:
            log.exception("apply failed for bob:s3cret@10.0.0.1:8080")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "redis://***@h:6379" in text and "Zq" not in text and "9xLr2" not in text
    assert "hunter2" not in text and "s3cret" not in text and "'password': '********'" in text


def test_every_actor_process_logs_and_crashes_redacted():
    """Importing fleet_ray.actors (what every actor process does) turns redaction on for its logs and
    its uncaught exceptions, whatever handler formats them."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "import fleet_ray.actors\n"
        "logging.getLogger('x').warning('store %s lost; proxy %s', 'redis://default:Zq@9xLr2@h:6379', "
        "'bob:s3cret@10.0.0.1:8080')\n"
        "raise RuntimeError(\"input_value={'password': 'hunter2'}\")\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "redis://***@h:6379" in out.stdout and "***@10.0.0.1:8080" in out.stdout, out.stdout
    assert "RuntimeError" in out.stderr and "'password': '********'" in out.stderr, out.stderr
    for secret in ("Zq", "9xLr2", "s3cret", "hunter2"):
        assert secret not in out.stdout + out.stderr


@pytest.mark.timeout(60)  # quadratic backtracking took minutes per case: the guard fails the test
def test_redaction_stays_linear_on_hostile_text():
    """Before the bounds, each of these took a minute or more (quadratic backtracking); a log line or
    an error message must never stall a tick."""
    cases = ["x" + ",a:b" * 20000, "a: 'x " * 20000, "a:" * 50000, "http://a:b" * 20000, "password: '" * 20000,
             "12345:" * 20000, "u:" + "p@" * 50000]
    out = [redact_text(text) for text in cases]
    assert all(isinstance(o, str) and o for o in out)
