"""The member side: running one operation under the guardrails, wherever the member lives.

A :class:`MemberRuntime` lives in each worker (a Ray actor, or the driver's thread pool) and runs
operations for the members assigned to it. Tasks get a :class:`MemberContext`::

    def task(ctx, item):
        r = ctx.fetch(item["url"])          # policy → breaker → rate-limit slot → request → outcome
        with ctx.guard("example.com"):       # the same guardrails around any other kind of work
            ...
        robots = ctx.discover("robots", lambda: ctx.fetch(...).text)   # one member runs it
        if ctx.cancelled: ...                # a race was won elsewhere

An operation on a known target reserves that target's rate-limit slot before the task runs; the
first guarded call to the same host uses it, so "one op, one request" costs one slot. If the task
makes no guarded call to its target, the operation itself is the request the breaker counts.

Guardrail state is a :class:`~fleet_ray.store.guardrails.GuardrailState` (from
:func:`fleet_ray.store.open_guardrails`). Chromium pages (``ctx.page``) come from a :class:`PageOpener`
handed in by whoever builds the runtime — :class:`fleet_ray.browser.campaign.ChromiumPages` — so this
module imports neither Ray nor the browser code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import httpx

from fleet_ray.campaign.breaker import BreakerTrip
from fleet_ray.campaign.config import CampaignConfig, MemberIdentity, target_host
from fleet_ray.campaign.policy import Policy, PolicyRequest, capabilities, enforce
from fleet_ray.campaign.proxies import is_reputation_hit, proxy_id
from fleet_ray.campaign.ratelimit import effective_rate
from fleet_ray.campaign.results import OpOutcome, OpSpec, RequestRecord, failure
from fleet_ray.errors import (
    CampaignError,
    CircuitOpen,
    DiscoveryFailed,
    GuardrailRefused,
    MemberCancelled,
    RateLimited,
)
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.store.guardrails import GuardrailState

log = logging.getLogger(__name__)
LATE_RETRIES = 3  # slots given up for lateness before a request goes out anyway


class GuardHandle:
    """Yielded by :meth:`MemberContext.guard`: mark the guarded work failed without raising."""

    def __init__(self, record: RequestRecord):
        self.record = record

    def fail(self, reason: str = "failed", status: int | None = None) -> None:
        self.record.ok = False
        self.record.error = reason
        if status is not None:
            self.record.status = status


class PageOpener(Protocol):
    """Opens a member's Chromium pages for :meth:`MemberContext.page`; closed with the runtime."""

    def open(self, ctx: MemberContext, url: str, wait_until: str, timeout_s: float | None
             ) -> AbstractContextManager[Any]: ...
    def close(self) -> None: ...


class MemberContext:
    def __init__(self, rt: MemberRuntime, spec: OpSpec, cancel: threading.Event):
        self._rt = rt
        self.spec = spec
        self.config = rt.config
        self.member = spec.member
        self.identity: MemberIdentity = rt.identities.get(spec.member) or MemberIdentity()
        self.stage = spec.stage
        self.target = spec.target
        self.node = rt.node
        self.campaign_id = rt.campaign_id
        self._cancel = cancel
        self._reserved: str | None = None
        self._slot_deadline = 0.0
        self.slot_at = 0.0
        self.requests: list[RequestRecord] = []
        self.trips: list[dict[str, Any]] = []

    # --- cancellation ---------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise MemberCancelled(self.member, "cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early on cancellation. Returns False when cancelled."""
        return not self._cancel.wait(max(0.0, seconds))

    # --- guardrails -----------------------------------------------------------------------------
    def _acquire(self, host: str, kind: str, url: str | None = None) -> None:
        """Policy → breaker → a rate-limit slot, then return at the slot, ready to send.

        The slot comes from the store's clock; this process only knows it lies within the reserve
        call's round trip. Slots are spaced (1 + margin)/rate, which leaves ``margin`` seconds of
        slack per 1 s window, so a sender later than that after its slot (a stalled process, a slow
        round trip) could crowd the next one: it gives the slot up and takes a new one instead (up to
        ``LATE_RETRIES`` times; under pathological CPU starvation the rate drops rather than bursts).
        """
        rt = self._rt
        self.check_cancelled()
        req = PolicyRequest(campaign_id=rt.campaign_id, capabilities=capabilities(kind, self.member, host),
                            member=self.member, target=host, url=url)
        enforce(rt.policy, req)
        self._check_breaker(host)
        rl = rt.config.rate_limit
        rate = effective_rate(rl.rate_for(host), rl.jitter_margin)
        for attempt in range(LATE_RETRIES + 1):
            asked = time.monotonic()
            res = rt.guardrails.reserve(host, rate, rl.burst, rl.max_wait_s)
            answered = time.monotonic()
            if not res.granted:
                raise RateLimited(host, res.wait_s, rl.max_wait_s)
            if res.wait_s > 0 and not self.wait(res.wait_s):
                raise MemberCancelled(self.member, "cancelled while waiting for a rate-limit slot")
            if res.wait_s > 1.0:  # it may have tripped meanwhile; short waits go straight out (less jitter)
                self._check_breaker(host)
            # the store decided somewhere inside the round trip: take its middle as the slot's local time
            self._slot_deadline = (asked + answered) / 2 + res.wait_s + rl.jitter_margin  # latest on-time send
            if time.monotonic() <= self._slot_deadline:
                return
            if attempt < LATE_RETRIES:
                log.debug("member %s: %.0f ms late for its slot on %s; taking a new one", self.member,
                          (time.monotonic() - self._slot_deadline + rl.jitter_margin) * 1000, host)
        log.warning("member %s: still late for a rate-limit slot on %s after %d tries; sending anyway",
                    self.member, host, LATE_RETRIES + 1)

    def _check_breaker(self, host: str) -> None:
        cfg = self._rt.config.breaker
        if cfg.enabled:
            state = self._rt.guardrails.breaker_state(host, cfg)
            if state.tripped:
                raise CircuitOpen(host, state.reason)

    def _record(self, rec: RequestRecord) -> None:
        self.requests.append(rec)
        cfg = self._rt.config.breaker
        if not cfg.enabled:
            return
        state, just = self._rt.guardrails.breaker_record(rec.target, rec.ok, cfg)
        if just:
            trip = BreakerTrip(
                target=rec.target, samples=state.trip_samples or state.samples,
                failures=state.trip_failures or state.failures,
                failure_rate=(state.trip_failures or 0) / max(1, state.trip_samples or 1),
                threshold=cfg.failure_rate, window_s=cfg.window_s,
                tripped_at_ms=state.tripped_at_ms or int(time.time() * 1000), campaign_id=self.campaign_id,
            )
            self.trips.append(trip.model_dump())
            self._rt.emit("campaign.breaker.tripped", f"breaker for {rec.target} tripped: {state.reason}",
                          trip.model_dump())

    @contextmanager
    def guard(self, target: str, url: str | None = None, method: str | None = None) -> Iterator[GuardHandle]:
        """Run a block as one guarded operation on ``target`` (a host or URL)."""
        host = target_host(target)
        if self._reserved == host and time.monotonic() <= self._slot_deadline:
            self._reserved = None  # the operation's slot pays for this call
            self.check_cancelled()
        else:
            if self._reserved == host:
                self._reserved = None  # the task took too long to use it: its slot is stale
            self._acquire(host, "request", url)
        rec = RequestRecord(target=host, ok=True, url=url, method=method, sent_at=time.time(),
                            proxy_id=proxy_id(self.spec.proxy) if self.spec.proxy else None)
        started = time.perf_counter()
        try:
            yield GuardHandle(rec)
        except MemberCancelled:
            raise
        except Exception as exc:
            rec.ok = False
            rec.error = rec.error or type(exc).__name__
            raise
        finally:
            rec.elapsed_ms = (time.perf_counter() - started) * 1000
            self._record(rec)

    def fetch(self, url: str, method: str = "GET", **kwargs: Any):
        """An HTTP request as this member (its UA, locale, cookie jar and proxy), under the guardrails.
        Returns the ``httpx.Response``; failure statuses count against the target's breaker."""
        client = self.http  # before the guard: nothing slow between the rate-limit slot and the send
        with self.guard(url, url=url, method=method) as g:
            try:
                resp = client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                g.fail(type(exc).__name__)
                raise
            g.record.status = resp.status_code
            text = resp.text[:20_000] if resp.headers.get("content-type", "").startswith("text/") else ""
            hit = is_reputation_hit(resp.status_code, None, text)
            g.record.reputation_hit = hit
            if resp.status_code in self._rt.config.breaker.failure_statuses or hit:
                g.fail(f"HTTP {resp.status_code}" + (" (reputation hit)" if hit else ""), resp.status_code)
            return resp

    def page(self, url: str, wait_until: str = "domcontentloaded", timeout_s: float | None = None):
        """Open ``url`` in Chromium as this member, as one guarded operation (like :meth:`fetch`)::

            with ctx.page("https://shop.example/item/7") as page:   # a Playwright (sync) Page
                price = page.locator(".price").inner_text()

        The page's context has the member's UA, viewport, locale, timezone, headers, proxy and cookie
        jar (shared with :attr:`http`); it is closed when the block ends, its cookies kept in the jar.
        The navigation's status is ``ctx.requests[-1].status``; failure statuses and challenge pages
        count against the target's breaker. Needs the browser extra (see ``fleet_ray.browser.campaign``).
        """
        if self._rt.pages is None:
            raise CampaignError("this member runtime was built without a page opener (ctx.page needs Chromium)")
        return self._rt.pages.open(self, url, wait_until, timeout_s)

    @property
    def http(self) -> httpx.Client:
        """This member's ``httpx.Client`` (cookies persist across its operations on this worker)."""
        return self._rt.client(self.member, self.spec.proxy)

    def discover(self, key: str, fn: Callable[[], Any], ttl_s: float = 600.0, wait_s: float = 300.0) -> Any:
        """Run an expensive lookup once for the whole campaign; other members reuse its (JSON) result."""
        return self._rt.discover(key, fn, ttl_s, wait_s, self)


class MemberRuntime:
    """Runs operations for the members of one worker; ``pages`` opens their Chromium pages (none: no ``ctx.page``)."""

    def __init__(self, campaign_id: str, config: CampaignConfig, guardrails: GuardrailState,
                 events: EventLog | None, policy: Policy | None, identities: dict[int, MemberIdentity],
                 node: str = "local", pages: PageOpener | None = None):
        self.campaign_id = campaign_id
        self.config = config
        self.guardrails = guardrails
        self.events = events
        self.policy = policy
        self.identities = identities
        self.node = node
        self.token = uuid.uuid4().hex
        self._hlc = HLC()
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._cancelled_early: set[str] = set()
        self._clients: dict[int, tuple[str | None, Any]] = {}
        self._found: dict[str, tuple[bool, Any]] = {}
        self._finding: dict[str, threading.Lock] = {}
        self.pages = pages  # Chromium per worker thread, started by the first ctx.page

    def emit(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if self.events is None:
            return
        ts = self._hlc.tick()
        try:
            self.events.append([Event(kind=kind, physical=ts.physical, counter=ts.counter,
                                      origin=f"campaign:{self.campaign_id}", message=message, data=data)])
        except Exception:  # an event must never fail the operation that caused it
            log.exception("could not append %s event", kind)

    def cancel(self, op_ids: list[str]) -> None:
        with self._lock:
            for op in op_ids:
                ev = self._running.get(op)
                if ev is not None:
                    ev.set()
                else:
                    self._cancelled_early.add(op)

    def run(self, spec: OpSpec, fn: Callable[[MemberContext, Any], Any]) -> OpOutcome:
        cancel = threading.Event()
        with self._lock:
            self._running[spec.op_id] = cancel
            if spec.op_id in self._cancelled_early:
                self._cancelled_early.discard(spec.op_id)
                cancel.set()
        ctx = MemberContext(self, spec, cancel)
        op_ok: bool | None = None
        try:
            ctx.check_cancelled()
            if spec.target:
                self.client(spec.member, spec.proxy)  # warm the member's client before taking a slot
                ctx._acquire(spec.target, "op", spec.target_ref)
                ctx._reserved, ctx.slot_at = spec.target, time.time()
            value = fn(ctx, spec.input)
            out = OpOutcome(op_id=spec.op_id, member=spec.member, ok=True, value=value)
            op_ok = True
        except (MemberCancelled, GuardrailRefused) as exc:  # nothing reached the target because of these
            out = failure(spec, exc)
        except Exception as exc:
            out = failure(spec, exc)
            op_ok = False
        finally:
            with self._lock:
                self._running.pop(spec.op_id, None)
        if ctx._reserved is not None and op_ok is not None:  # the op itself was the request
            try:
                ctx._record(RequestRecord(target=ctx._reserved, ok=op_ok, url=spec.target_ref, method="op",
                                          error=None if op_ok else out.error_type, sent_at=ctx.slot_at,
                                          proxy_id=proxy_id(spec.proxy) if spec.proxy else None))
            except Exception:
                log.exception("could not record the outcome of %s for the breaker", spec.op_id)
        out.requests, out.trips, out.node = ctx.requests, ctx.trips, self.node
        out.proxy = proxy_id(spec.proxy) if spec.proxy else None
        return out

    def client(self, member: int, proxy: str | None) -> httpx.Client:
        held = self._clients.get(member)
        if held is not None and held[0] == proxy:
            return held[1]
        ident = self.identities.get(member) or MemberIdentity()
        headers = {"User-Agent": ident.user_agent, "Accept-Language": ident.locale, **ident.headers}
        cookies = held[1].cookies if held is not None else ident.cookies
        client = httpx.Client(headers=headers, cookies=cookies, proxy=proxy, follow_redirects=True,
                              timeout=self.config.request_timeout_s)
        if held is not None:
            held[1].close()
        self._clients[member] = (proxy, client)
        return client

    def discover(self, key: str, fn: Callable[[], Any], ttl_s: float, wait_s: float, ctx: MemberContext) -> Any:
        name = f"{self.campaign_id}:{key}"
        with self._lock:
            lock = self._finding.setdefault(name, threading.Lock())
        with lock:  # one lookup per process; the store makes it one per campaign
            found = self._found.get(name)
            if found is None:
                found = self._discover_shared(name, key, fn, ttl_s, wait_s, ctx)
                if found[0]:  # failures are shared briefly through the store, not memoised here
                    self._found[name] = found
        ok, value = found
        if not ok:
            raise DiscoveryFailed(key, value)
        return value

    def _discover_shared(self, name: str, key: str, fn: Callable[[], Any], ttl_s: float, wait_s: float,
                         ctx: MemberContext) -> tuple[bool, Any]:
        deadline = time.monotonic() + wait_s
        pause = 0.01
        while True:
            raw = self.guardrails.shared_get(name)
            if raw is not None:
                found = json.loads(raw)
                return bool(found["ok"]), found["value"]
            left = self.guardrails.claim(f"discover:{name}", self.token, ttl_s=min(ttl_s, wait_s))
            if left == 0.0:
                raw = self.guardrails.shared_get(name)  # it may have landed between the two calls
                if raw is not None:
                    found = json.loads(raw)
                    return bool(found["ok"]), found["value"]
                try:
                    found = {"ok": True, "value": fn()}
                    raw = json.dumps(found).encode()
                except Exception as exc:
                    found = {"ok": False, "value": f"{type(exc).__name__}: {exc}"}
                    raw = json.dumps(found).encode()
                self.guardrails.shared_put(name, raw, ttl_s if found["ok"] else min(ttl_s, 5.0))
                self.guardrails.release(f"discover:{name}", self.token)
                return bool(found["ok"]), found["value"]
            if time.monotonic() > deadline:
                return False, f"no result for {key!r} within {wait_s:g}s"
            if not ctx.wait(min(pause, left)):
                raise MemberCancelled(ctx.member, "cancelled while waiting for a shared discovery")
            pause = min(pause * 2, 0.25)

    def close(self) -> None:
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()
        if self.pages is not None:
            self.pages.close()
        self.guardrails.close()
