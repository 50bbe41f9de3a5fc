"""Keeping secrets out of everything fleet-ray shows: the one home for redaction.

Every output path (error messages, events, crash records, status, the HTTP API, notifications, CLI
output) redacts through this module, so what counts as a secret is decided in one place:

- :func:`redact_url` — ``scheme://user:password@host`` → ``scheme://***@host`` anywhere in a text;
- :func:`redact_json_bytes` — the same inside an already-serialised JSON document;
- :func:`redact_tree` — a JSON-like tree with secret-looking keys (:data:`SECRET_KEY`) masked as
  :data:`MASK` and URL credentials redacted;
- :func:`host_only` — a URL cut down to ``scheme://host:port`` (for URLs that carry a token in the path);
- :func:`masked_userinfo` — a URL shown with a ``***@`` marker (its credentials are kept elsewhere).

Pure functions, standard library only; nothing else in fleet-ray is imported here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MASK = "********"
#: credential-looking keys; a proxy's username counts (providers encode the account and zone in it)
SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|signing|auth|user(_?name)?$", re.I
)

_SCHEME = r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)"
# the user-info of a URL in free text: up to the '@', not across a '/' or whitespace
_URL_CRED = re.compile(_SCHEME + r"[^@/\s]+@")
# in serialised JSON a quote ends the string the URL is in: never match across one
_URL_CRED_JSON = re.compile((_SCHEME + r"[^@/\s\"']+@").encode())


def redact_url(text: str) -> str:
    """Replace the user-info part of every URL in ``text`` (``user:password@``) with ``***@``."""
    return _URL_CRED.sub(r"\g<scheme>***@", text)


def redact_json_bytes(body: bytes) -> bytes:
    """Mask ``user:password@`` in every URL inside an already-serialised JSON document."""
    return _URL_CRED_JSON.sub(rb"\g<scheme>***@", body)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a credential (its value is shown as :data:`MASK`)."""
    return SECRET_KEY.search(str(key)) is not None


def redact_tree(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """Copy of a JSON-like tree with secret-looking keys masked and URL credentials redacted.

    Booleans and subtrees under a secret-looking key stay readable (the subtree is redacted in turn);
    ``found`` collects the dotted paths that were masked (so a client can tell what it can't see).
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            p = f"{path}.{k}" if path else str(k)
            if is_secret_key(k) and v not in (None, "", {}, []) and not isinstance(v, bool | dict | list):
                out[k] = MASK
                if found is not None:
                    found.append(p)
            else:
                out[k] = redact_tree(v, p, found)
        return out
    if isinstance(value, list):
        return [redact_tree(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, str):
        return redact_url(value)
    return value


def host_only(url: str) -> str:
    """``scheme://host[:port]`` of a URL: no credentials, path or query (where tokens hide)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


def masked_userinfo(url: str) -> str:
    """The URL with a ``***@`` user-info marker, for a URL whose credentials are kept apart from it."""
    return url.replace("://", "://***@", 1)
