"""Keeping secrets out of everything fleet-ray shows: the one home for redaction.

Every output path (error messages, events, crash records, status, the HTTP API, notifications, CLI
output, the supervisor's and slots' logs) redacts through this module, so what counts as a secret is
decided in one place:

- :func:`redact_text` (also :func:`redact_url`, its historical name) — every secret shape this module
  knows, anywhere in a text: URL credentials (``scheme://user:password@host`` → ``scheme://***@host``,
  up to the *last* ``@`` of the authority, so a password holding ``@`` is hidden whole), credentials
  without a scheme (``user:password@host:port`` → ``***@host:port``), tokens in URL paths (Telegram
  ``bot<token>``, Slack and Discord webhooks), ``Bearer``/``Basic`` credentials, well-known token
  formats (Slack ``xox?-``, GitHub ``ghp_``…) and ``key=value`` / ``'key': 'value'`` pairs whose key
  looks secret (:func:`is_secret_key`) — Pydantic's ``input_value={'password': ...}`` echo included;
- :func:`redact_json_bytes` — the same inside an already-serialised JSON document (parsed, redacted
  as a tree, serialised again);
- :func:`redact_tree` — a JSON-like tree with the values under secret-looking keys masked as
  :data:`MASK` (a list under such a key has each of its items masked) and every string redacted;
- :func:`restore_masked` — the inverse for a round trip: a tree that came back with masked values
  takes the current value at each masked place ("keep the current one");
- :func:`host_only` — a URL cut down to ``scheme://host:port`` (for URLs that carry a token in the path);
- :func:`masked_userinfo` — a URL shown with a ``***@`` marker (its credentials are kept elsewhere);
- :class:`RedactingFilter` / :func:`install_redaction` — log records redacted before any handler
  formats them, and uncaught exceptions printed redacted, in every fleet-ray process (actors, the
  API replica, the CLI).

What counts as a secret key (decided here, documented in the README's "Secrets" section): the key is
split into words (``proxyUser`` → ``proxy user``, ``API_KEY`` → ``api key``). It is a secret if a word
is a credential noun (password, passwd, pwd, pass, passphrase, secret, token(s), credential(s),
cookie(s), session(s), bearer, webhook(s), auth, authorization, signing, signature, dsn, sid,
apikey, privatekey…), if it is ``key`` alone or ``<api|private|secret|access|signing|...> key(s)``, or if
its last word is ``user``/``username``/``login`` (proxy providers encode the account in it). It is *not*
a secret when a word marks a count, a limit, a duration or a place (``max_tokens``, ``token_ttl_s``,
``session_timeout_s``, ``max_sessions``, ``token_file``, ``sessions_live``…): those hold numbers or paths,
never the secret itself. ``keys`` (a list of names) and ``user_agent`` stay readable. Booleans and
mappings under a secret-looking key stay readable (the mapping is redacted in turn).

Pure functions, standard library only; nothing else in fleet-ray is imported here.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import traceback
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

MASK = "********"

# -- what a secret key is --------------------------------------------------------------------------
_SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token", "tokens",
    "credential", "credentials", "creds", "cookie", "cookies", "session", "sessions", "bearer", "webhook",
    "webhooks", "auth", "authorization", "signing", "dsn", "sid", "apikey", "apikeys",
    "privatekey", "accesstoken", "authtoken", "pin", "otp", "totp",
})
#: glued spellings (``proxypassword``, ``xaccesstoken``) caught inside a single word
_SECRET_STEMS = ("password", "passwd", "secret", "credential", "apikey", "bearer", "cookie", "webhook")
_KEY_QUALIFIERS = frozenset({
    "api", "private", "secret", "access", "signing", "encryption", "client", "auth", "ssh", "license",
    "master", "account", "service", "session", "app", "x",
})
_KEY_WORDS = frozenset({"key", "keys"})
_LAST_USER_WORDS = frozenset({"user", "username", "login"})
#: words that make a key a count, limit, duration, flag or place — never the secret itself
_NOT_SECRET_WORDS = frozenset({
    "max", "min", "num", "n", "count", "counts", "total", "limit", "limits", "ttl", "timeout", "size", "len",
    "length", "age", "expiry", "expires", "interval", "period", "retries", "rate", "live", "retired",
    "used", "uses", "per", "s", "ms", "seconds", "file", "path", "dir", "mode", "policy", "enabled", "env",
    "type", "kind", "refresh", "rotation", "rotate", "prefix",
})
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def _words(key: str) -> list[str]:
    out: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", key):
        out.extend(w.lower() for w in _CAMEL.findall(part))
    return out


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a credential (its value is shown as :data:`MASK`); see the module."""
    return _is_secret_name(str(key))


@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    words = _words(key)
    if not words or any(w in _NOT_SECRET_WORDS for w in words):
        return False
    if any(w in _SECRET_WORDS or w.endswith("token") or any(s in w for s in _SECRET_STEMS) for w in words):
        return True
    if words == ["key"] or any(w in _KEY_WORDS and i and words[i - 1] in _KEY_QUALIFIERS
                               for i, w in enumerate(words)):
        return True
    return words[-1] in _LAST_USER_WORDS or words[-2:] == ["user", "name"]


# -- secrets in text -------------------------------------------------------------------------------
_SCHEME = r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)"
# the user-info of a URL: everything up to the LAST '@' before the authority ends ('/', '?', '#' or
# whitespace), so a password with a raw '@' in it is hidden whole. RFC 3986 asks for '/', '?' and
# '#' to be percent-encoded in a password; a raw one ends the authority here as it does for clients.
_URL_CRED = re.compile(_SCHEME + r"[^/?#\s]*@")
# a Telegram bot token, alone (digits:35 characters) or in a Bot API path (/bot<digits>:<anything>)
_TELEGRAM = re.compile(r"(?<![A-Za-z0-9])(?P<p>bot)?\d{5,}:[A-Za-z0-9_-]{30,}")
_TELEGRAM_PATH = re.compile(r"/bot\d+:[^/\s?#\"'<>]+")
_WEBHOOK_PATH = re.compile(
    r"(?P<p>hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/|"
    r"discord(?:app)?\.com/api/webhooks/|webhook\.office\.com/webhookb2/|/api/webhooks?/)[A-Za-z0-9_/+=.%@-]+"
)
_AUTH_SCHEME = re.compile(r"(?P<p>\bBearer\s+)[A-Za-z0-9._~+/=:-]{6,}", re.I)
# an Authorization header's value, whatever its scheme (Basic, Digest, a bare token)
_AUTH_HEADER = re.compile(r"(?P<p>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:[A-Za-z]+\s+)?[^\s'\",;]+", re.I)
_KNOWN_TOKENS = re.compile(
    r"\b(?:xox[abposr]-[A-Za-z0-9-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
    r"sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,})"
)
# user:password@host:port without a scheme (a proxy as providers hand it out); the password runs to
# the last '@' that a host:port follows
_BARE_CRED = re.compile(
    r"(?:^|(?<=[\s'\"(\[{<,;=]))[^\s:/@'\"(\[{<,;=]{1,128}:(?!//)\S{0,256}@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})\b"
)
# key=value, key: value, 'key': 'value', "key": "value" — masked when the key looks secret; an unquoted
# value runs to the next whitespace or '&' (a query string's separator), punctuation included. The key
# is matched first and the value only after a secret key, so text with many pairs stays linear.
_KV_KEY = re.compile(r"(?P<kq>['\"]?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]{0,127})(?P=kq)\s*(?:=|:(?!//))\s*")
_KV_VALUE = re.compile(r"'(?:[^'\\]|\\.){0,1024}'|\"(?:[^\"\\]|\\.){0,1024}\"|[^\s&]{1,1024}")


def _redact_pairs(text: str) -> str:
    # a pair whose key is harmless consumes only its key, so a secret pair inside its value
    # (``input_value={'password': ...}``) is still seen
    out: list[str] = []
    pos = 0
    while (m := _KV_KEY.search(text, pos)) is not None:
        out.append(text[pos:m.end()])
        pos = m.end()
        if not is_secret_key(m.group("key")):
            continue
        v = _KV_VALUE.match(text, pos)
        if v is None:
            continue
        value = v.group(0)
        if value[0] in "'\"" and len(value) > 1 and value[-1] == value[0]:
            out.append(f"{value[0]}{MASK}{value[0]}")
        else:
            out.append(value if value in (MASK, "***") else MASK)
        pos = v.end()
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Every secret shape this module knows, replaced in ``text`` (see the module's docstring)."""
    if not text:
        return text
    text = _URL_CRED.sub(r"\g<scheme>***@", text)
    text = _TELEGRAM.sub(lambda m: f"{m.group('p') or ''}***", text)
    text = _TELEGRAM_PATH.sub("/bot***", text)
    text = _WEBHOOK_PATH.sub(r"\g<p>***", text)
    text = _AUTH_HEADER.sub(r"\g<p>***", text)
    text = _AUTH_SCHEME.sub(r"\g<p>***", text)
    text = _KNOWN_TOKENS.sub("***", text)
    text = _BARE_CRED.sub(r"***@\g<host>:\g<port>", text)
    return _redact_pairs(text)


def redact_url(text: str) -> str:
    """:func:`redact_text` under the name most callers know: URL credentials (and every other secret
    shape) replaced in ``text``."""
    return redact_text(text)


_URL_CRED_JSON = re.compile((_SCHEME + r"(?:[^/?#\s\"\\]|\\.)*@").encode())


def redact_json_bytes(body: bytes) -> bytes:
    """An already-serialised JSON document, redacted as a tree (:func:`redact_tree`) and serialised
    again compactly; a body that is not JSON gets the URL credentials inside it masked."""
    try:
        data = json.loads(body)
    except ValueError:
        return _URL_CRED_JSON.sub(rb"\g<scheme>***@", body)
    return json.dumps(redact_tree(data), separators=(",", ":")).encode()


# -- trees -----------------------------------------------------------------------------------------
def _maskable(v: Any) -> bool:
    return v not in (None, "") and not isinstance(v, bool | dict | list)


def _key_of(path: str) -> str:
    """The mapping key a dotted path ends in (``a.tokens[2]`` → ``tokens``)."""
    return re.sub(r"(\[\d+\])+$", "", path).rsplit(".", 1)[-1]


def redact_tree(value: Any, path: str = "", found: list[str] | None = None, _secret: bool = False) -> Any:
    """Copy of a JSON-like tree with secret-looking keys masked and every string redacted.

    Booleans and mappings under a secret-looking key stay readable (the mapping is redacted in turn);
    a list under one has each scalar item masked (and ``value`` in each mapping item, as in a cookie
    list). ``found`` collects the dotted paths that were masked (so a client can tell what it can't see).
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            p = f"{path}.{k}" if path else str(k)
            secret = is_secret_key(k) or (_secret and k in ("value", "values"))
            if secret and _maskable(v):
                out[k] = MASK
                if found is not None:
                    found.append(p)
            else:
                out[k] = redact_tree(v, p, found, secret and isinstance(v, list))
        return out
    if isinstance(value, list):
        out_list = []
        for i, v in enumerate(value):
            p = f"{path}[{i}]"
            if _secret and _maskable(v):
                out_list.append(MASK)
                if found is not None:
                    found.append(p)
            else:
                out_list.append(redact_tree(v, p, found, _secret and isinstance(v, list | dict)))
        return out_list
    if isinstance(value, str):
        return redact_text(value)
    return value


def shown(key: str, value: Any) -> Any:
    """What :func:`redact_tree` shows for the scalar ``value`` under ``key``."""
    if is_secret_key(key) and _maskable(value):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def is_masked_form(value: Any) -> bool:
    """Whether ``value`` carries a mask this module puts in (``********`` or ``***@``/``***``)."""
    return isinstance(value, str) and (value == MASK or "***" in value)


_ITEM_IDS = ("name", "id", "url", "server")


def _item_id(item: Any) -> tuple[str, Any] | None:
    if isinstance(item, dict):
        for k in _ITEM_IDS:
            if isinstance(item.get(k), str | int) and not is_masked_form(item.get(k)):
                return k, item[k]
    return None


def restore_masked(new: Any, current: Any, path: str = "", unresolved: list[str] | None = None,
                   _secret: bool = False) -> Any:
    """``new`` with every value that is the masked form of the value at the same place in ``current``
    replaced by that current value: a tree read back masked (``GET /api/v1/spec``) and sent again means
    "keep the current secrets". Items of lists match by ``name``/``id``/``url`` when they have one, else
    by position. A :data:`MASK` (or ``***@``) left with no current value to keep goes into
    ``unresolved`` (dotted paths) and stays as it is; the caller refuses it.
    """
    if isinstance(new, dict):
        cur = current if isinstance(current, dict) else {}
        out = {}
        for k, v in new.items():
            p = f"{path}.{k}" if path else str(k)
            secret = is_secret_key(k) or (_secret and k in ("value", "values"))
            out[k] = restore_masked(v, cur.get(k), p, unresolved, secret and isinstance(v, list))
        return out
    if isinstance(new, list):
        cur_list = current if isinstance(current, list) else []
        by_id = {_item_id(c): c for c in cur_list if _item_id(c) is not None}
        out_list = []
        for i, v in enumerate(new):
            ident = _item_id(v)
            if ident is not None:
                match = by_id.get(ident)
            else:
                match = cur_list[i] if i < len(cur_list) else None
            out_list.append(restore_masked(v, match, f"{path}[{i}]", unresolved, _secret))
        return out_list
    if not is_masked_form(new) or new == current:
        return new
    if current is not None and not isinstance(current, dict | list):
        masked = MASK if _secret and _maskable(current) else shown(_key_of(path), current)
        if masked == new:
            return current
    if (new == MASK or "***@" in new) and unresolved is not None:
        unresolved.append(path)
    return new


# -- URLs shown apart ------------------------------------------------------------------------------
def host_only(url: str) -> str:
    """``scheme://host[:port]`` of a URL: no credentials, path or query (where tokens hide)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


def masked_userinfo(url: str) -> str:
    """The URL with a ``***@`` user-info marker, for a URL whose credentials are kept apart from it."""
    return url.replace("://", "://***@", 1)


# -- logs ------------------------------------------------------------------------------------------
class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments and exception text in place (a filter on a handler, or
    through :func:`install_redaction`, sees every record before it is formatted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_fleet_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string is logged as it is, minus secrets
        message = f"{record.msg} {record.args}"
    record.msg, record.args = redact_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)  # a formatter uses exc_text as it finds it
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    record._fleet_redacted = True
    return record


_installed = False


def install_redaction() -> None:
    """Redact this process's logs and uncaught exceptions (idempotent).

    Every log record is redacted when it is created (a record factory), so no handler — Ray's
    included — formats a secret; the root logger's handlers present now also get a
    :class:`RedactingFilter`. An uncaught exception's traceback is printed redacted. The actors
    package, the API package and the CLI call this once per process.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    sys.excepthook = _redacting_excepthook


def _redacting_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact_text("".join(traceback.format_exception(kind, exc, tb))))
