"""Every JavaScript scope a page can open speaks for the same identity.

A page is not the only place a site can look. Dedicated, shared and service workers, iframes (also
``srcdoc`` and ``about:blank`` ones) and popups each have their own ``navigator``, ``Intl`` and client
hints, and fingerprinting scripts compare them with the page. Playwright's own user-agent option
reaches pages and dedicated workers only, without client-hint brands and with ``navigator.languages``
cut to the locale; shared and service workers keep the engine's values (``HeadlessChrome``). So a
browser slot sets them itself, over CDP, on each page's own session:

- :class:`ScopeOverrides` — what one identity's targets get: the user agent with its client-hint
  metadata and ``Accept-Language`` (``Emulation.setUserAgentOverride``), locale and timezone, and the
  identity's init script (:mod:`fleet_ray.browser.stealth`; pages and frames get it from the context).
- :func:`prepare_page` — a page gets the overrides; ``Target.setAutoAttach`` (``flatten: false``, so
  the session sits beside Playwright's own without touching them) gives its dedicated and service
  workers and out-of-process iframes the same as they start; and the page's ``Fetch`` domain puts the
  init script at the top of every worker's main script (dedicated and shared workers), because
  Chromium resumes a starting worker as soon as *any* session lets it go — Playwright's does so at
  once — so nothing sent over CDP is sure to land before a worker's first statement.
- :class:`SharedWorkers` — one per Chromium: a shared worker's overrides (its requests' headers); CDP
  pauses a new shared worker only for a browser-wide auto-attach, which takes flat sessions only
  (Playwright's), so the slot attaches as soon as Chromium reports one.

Limits: a service worker's script is not seen by the page's ``Fetch`` domain, so it gets the script
over CDP when it starts (its first statements can run before); blob workers carry the script in their
source (the init script's own ``URL.createObjectURL``/``Worker`` wrappers); a popup's first document
runs with the init script's values but its first requests carry the engine's ``Sec-CH-UA`` until its
page session is set up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
from typing import Any

from .identity import Identity
from .stealth import init_script

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 5.0
JS_TYPE = re.compile(r"javascript|ecmascript", re.I)
USE_STRICT = re.compile(r"""^(\ufeff?\s*(?:(['"])use strict\2;?))""")
# a worker's main script reaches the page's Fetch domain as "Other" (page scripts are "Script")
WORKER_SCRIPT_PATTERN = {"urlPattern": "*", "resourceType": "Other", "requestStage": "Response"}
WORKER_TYPES = ("worker", "shared_worker", "service_worker")


class ScopeOverrides:
    """One identity's overrides for each target it opens, and its init script (``script``: put at the
    top of worker scripts, evaluated in service workers)."""

    def __init__(self, identity: Identity):
        self.identity = identity
        self.script = init_script(identity.script_config())
        self._ua = identity.ua_override()

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = [
            ("Emulation.setUserAgentOverride", self._ua),
            ("Emulation.setLocaleOverride", {"locale": self.identity.locale}),
            ("Emulation.setTimezoneOverride", {"timezoneId": self.identity.timezone}),
        ]
        return out


class _Relay:
    """Talks to the targets attached to one CDP session (``flatten: false``): each message goes in
    ``Target.sendMessageToTarget``; answers and events come back in ``Target.receivedMessageFromTarget``."""

    _ids = itertools.count(1)

    def __init__(self, session: Any, where: str):
        self.session = session
        self.where = where
        self._waiting: dict[tuple[str, int], asyncio.Future] = {}
        self._contexts: dict[str, asyncio.Future] = {}
        session.on("Target.receivedMessageFromTarget", self._received)

    async def _send(self, sid: str, method: str, params: dict[str, Any], answer: bool = False) -> dict | None:
        mid = next(self._ids)
        fut = None
        if answer:
            fut = self._waiting[(sid, mid)] = asyncio.get_running_loop().create_future()
        await self.session.send("Target.sendMessageToTarget", {
            "sessionId": sid, "message": json.dumps({"id": mid, "method": method, "params": params}),
        })
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)
        finally:
            self._waiting.pop((sid, mid), None)

    async def prepare(self, event: dict[str, Any], overrides: ScopeOverrides | None, resume: bool = True) -> None:
        """Send ``overrides`` for the attached target (none: nothing), then let it run."""
        sid = event["sessionId"]
        kind = event["targetInfo"].get("type", "")
        try:
            if overrides is not None:
                # messages to one target run in order: the target resumes after the last override
                for method, params in overrides.messages():
                    await self._send(sid, method, params)
                if kind == "service_worker":  # dedicated and shared workers carry it in their script
                    await self._evaluate(sid, overrides.script)
            if resume and event.get("waitingForDebugger"):
                await self._send(sid, "Runtime.runIfWaitingForDebugger", {})
        except Exception as exc:  # the target (or the browser) went away meanwhile
            log.debug("%s: %s target not prepared: %s", self.where, kind, exc)
        finally:
            self._contexts.pop(sid, None)

    async def _evaluate(self, sid: str, script: str) -> None:
        """Run the init script in a (service) worker as it starts: at once if its global scope is
        there, else once its execution context appears."""
        params = {"expression": script, "silent": True}
        answer = await self._send(sid, "Runtime.evaluate", params, answer=True)
        if answer is not None and "error" not in answer and "exceptionDetails" not in answer.get("result", {}):
            return
        created = self._contexts[sid] = asyncio.get_running_loop().create_future()
        await self._send(sid, "Runtime.enable", {})
        with contextlib.suppress(TimeoutError):
            context_id = await asyncio.wait_for(created, ANSWER_TIMEOUT_S)
            answer = await self._send(sid, "Runtime.evaluate", {**params, "contextId": context_id}, answer=True)
        await self._send(sid, "Runtime.disable", {})
        failed = (answer or {}).get("error") or (answer or {}).get("result", {}).get("exceptionDetails")
        if answer is None or failed:
            log.warning("%s: a worker did not take its identity's script: %s", self.where,
                        json.dumps(failed)[:300] if failed else "no answer")

    def _received(self, event: dict[str, Any]) -> None:
        try:
            msg = json.loads(event.get("message") or "{}")
        except ValueError:
            return
        sid = event.get("sessionId", "")
        fut = self._waiting.get((sid, msg.get("id", -1)))
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif msg.get("method") == "Runtime.executionContextCreated":
            created = self._contexts.get(sid)
            if created is not None and not created.done():
                created.set_result(msg["params"]["context"]["id"])


class SharedWorkers:
    """Shared workers of one Chromium, by browser context. CDP pauses a new shared worker only for a
    browser-wide auto-attach, which Playwright keeps to itself (flat sessions only): the slot learns of
    each new shared worker (``Target.setDiscoverTargets``), attaches and sets its identity as soon as
    it can — the worker's script has usually not arrived yet, but nothing holds it back."""

    def __init__(self, browser: Any):
        self.browser = browser
        self.contexts: dict[str, ScopeOverrides] = {}
        self._session: Any = None
        self._relay: _Relay | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._session = await self.browser.new_browser_cdp_session()
        self._relay = _Relay(self._session, "shared worker")
        self._session.on("Target.targetCreated", self._created)
        await self._session.send("Target.setDiscoverTargets", {"discover": True, "filter": [{"type": "shared_worker"}]})

    def register(self, browser_context_id: str | None, overrides: ScopeOverrides) -> None:
        if browser_context_id:
            self.contexts[browser_context_id] = overrides

    def forget(self, browser_context_id: str | None) -> None:
        self.contexts.pop(browser_context_id or "", None)

    def _created(self, event: dict[str, Any]) -> None:
        info = event["targetInfo"]
        overrides = self.contexts.get(info.get("browserContextId", ""))
        if info.get("type") != "shared_worker" or overrides is None:
            return
        task = asyncio.ensure_future(self._attach(info, overrides))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach(self, info: dict[str, Any], overrides: ScopeOverrides) -> None:
        try:
            attached = await self._session.send("Target.attachToTarget", {"targetId": info["targetId"], "flatten": False})
        except Exception as exc:
            log.debug("shared worker %s not attached: %s", info.get("url"), exc)
            return
        await self._relay.prepare({"sessionId": attached["sessionId"], "targetInfo": info}, overrides)


def with_prelude(source: str, script: str) -> str:
    """A worker's script with the identity's script first (after a leading "use strict" directive,
    which must stay first for the worker's own code to stay strict)."""
    m = USE_STRICT.match(source)
    head = m.group(1) if m else ""
    return f"{head}\n{script}\n{source[len(head):]}"


async def _worker_script(cdp: Any, event: dict[str, Any], script: str) -> None:
    """A paused response of type Other: a worker's main script gets the identity's script first,
    anything else goes on untouched."""
    rid = event["requestId"]
    try:
        headers = event.get("responseHeaders") or []
        ctype = next((h["value"] for h in headers if h["name"].lower() == "content-type"), "")
        status = event.get("responseStatusCode") or 0
        if 200 <= status < 300 and JS_TYPE.search(ctype):
            body = await cdp.send("Fetch.getResponseBody", {"requestId": rid})
            raw = base64.b64decode(body["body"]) if body.get("base64Encoded") else body["body"].encode()
            source = raw.decode("utf-8")
            kept = [h for h in headers if h["name"].lower() not in ("content-length", "content-encoding")]
            await cdp.send("Fetch.fulfillRequest", {
                "requestId": rid, "responseCode": status, "responseHeaders": kept,
                "body": base64.b64encode(with_prelude(source, script).encode()).decode(),
            })
            return
    except Exception as exc:  # not UTF-8, the page went away, the request was cancelled
        log.debug("worker script left as it was: %s", exc)
    with contextlib.suppress(Exception):
        await cdp.send("Fetch.continueRequest", {"requestId": rid})


async def browser_context_id(cdp: Any) -> str | None:
    """The CDP id of the browser context a page's session belongs to."""
    with contextlib.suppress(Exception):
        info = await cdp.send("Target.getTargetInfo")
        return info["targetInfo"].get("browserContextId")
    return None


async def prepare_page(cdp: Any, overrides: ScopeOverrides) -> None:
    """Give a page (on its own CDP session ``cdp``) the identity's overrides, and its workers — dedicated
    and service workers — and out-of-process iframes the same before they run."""
    for method, params in overrides.messages():
        with contextlib.suppress(Exception):  # the timezone: Playwright's own override is in effect
            await cdp.send(method, params)
    relay = _Relay(cdp, "page")
    tasks: set[asyncio.Task] = set()

    def attached(event: dict[str, Any]) -> None:
        kind = event["targetInfo"].get("type")
        task = asyncio.ensure_future(relay.prepare(event, overrides if kind in (*WORKER_TYPES, "iframe") else None))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def paused(event: dict[str, Any]) -> None:
        task = asyncio.ensure_future(_worker_script(cdp, event, overrides.script))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    cdp.on("Target.attachedToTarget", attached)
    cdp.on("Fetch.requestPaused", paused)
    await cdp.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": False})
    # Chromium resumes a starting worker as soon as any session lets it go (Playwright's does at once),
    # so a worker's script can run before anything sent over CDP: its main script brings ours instead
    await cdp.send("Fetch.enable", {"patterns": [WORKER_SCRIPT_PATTERN]})
