"""The driver side of a campaign: setup, the audit chain, guardrail pre-checks, status, teardown.

::

    from fleet_ray.campaign import Campaign

    with Campaign(members=20, campaign_id="prices-7", store_url="redis://127.0.0.1:6379/0",
                  audit={"sink": "prices-7.ndjson"}) as c:           # key from $FLEET_AUDIT_KEY
        results = c.map_targets(lambda ctx, url: ctx.fetch(url).status_code, urls)
        print(c.status())

Setup checks everything before anything starts: the config (every bad field named), the signing
key, the store, the driver lease (one driver per campaign id, so the chain stays linear), the
durable log (a fresh campaign id must be unused; ``resume=True`` continues one). Coordinators live
in :mod:`fleet_ray.campaign.coordinators`, the dispatch loop in :mod:`fleet_ray.campaign.engine`.
Guardrail state comes from :func:`fleet_ray.store.open_guardrails`, beside the store. Members run in
a thread pool here (``executor="local"``) or on Ray worker actors
(:mod:`fleet_ray.actors.campaign_workers`); their pages open in Chromium through
:class:`fleet_ray.browser.campaign.ChromiumPages`. Both are imported only when the executor starts.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from fleet_ray.campaign import audit as A
from fleet_ray.campaign.breaker import BreakerTrip
from fleet_ray.campaign.config import CampaignConfig, MemberIdentity, target_host, validate_config
from fleet_ray.campaign.coordinators import Coordinators
from fleet_ray.campaign.engine import Executor, LocalExecutor, Work
from fleet_ray.campaign.member import MemberRuntime
from fleet_ray.campaign.policy import Policy, PolicyRequest, capabilities, evaluate
from fleet_ray.campaign.proxies import MemberProxyPool
from fleet_ray.campaign.results import AuditStatus, CampaignStatus, MemberResult, OpOutcome, OpSpec, to_result
from fleet_ray.campaign.signing import SigningKey, load_signing_key
from fleet_ray.errors import (
    AuditKeyError,
    CampaignClosed,
    CampaignConfigError,
    CampaignError,
    CampaignLeaseHeld,
    CircuitOpen,
    FleetError,
    MemberCancelled,
    PolicyDenied,
)
from fleet_ray.observe.events import EventLog
from fleet_ray.redact import redact_url
from fleet_ray.settings import Settings
from fleet_ray.store import open_guardrails, open_store

log = logging.getLogger(__name__)

Notifier = Callable[[BreakerTrip], None]


class Campaign(Coordinators):
    def __init__(self, members: int | list[MemberIdentity | dict[str, Any]] = 1, *, campaign_id: str | None = None,
                 store_url: str | None = None, namespace: str | None = None, policy: Policy | None = None,
                 notifier: Notifier | None = None, executor: str = "ray", config: CampaignConfig | None = None,
                 signing_key: SigningKey | None = None, **options: Any):
        if config is None:
            idents = ([{"id": f"member-{i}"} for i in range(members)] if isinstance(members, int)
                      else [m.model_dump() if isinstance(m, MemberIdentity) else m for m in members])
            data = {"campaign_id": campaign_id or f"campaign-{uuid.uuid4().hex[:12]}", "members": idents, **options}
            config = validate_config(data)
        else:
            config = validate_config(config)
        for i, ident in enumerate(config.members):
            ident.id = ident.id or f"member-{i}"
        if config.audit.sink is not None and not config.audit.signing:
            raise CampaignConfigError([{"loc": "audit.sink", "msg": "an audit sink needs audit.signing=True"}])
        if executor not in ("ray", "local"):
            raise CampaignConfigError([{"loc": "executor", "msg": "use 'ray' or 'local'"}])
        settings = Settings()
        self.config = config
        self.campaign_id = config.campaign_id
        self.store_url = store_url or settings.store_url
        self.namespace = namespace or settings.namespace
        if executor == "ray" and self.store_url.startswith("memory://"):
            raise CampaignConfigError([{"loc": "store_url", "msg": "memory:// can't be shared with Ray workers"}])
        self.policy = policy
        self.notifier = notifier
        key = None if not config.audit.signing else (
            signing_key or load_signing_key(config.audit.key_env, config.audit.key_file))
        self._token = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy: set[int] = set()
        self._cursor = 0
        self._active = 0
        self._runs = 0
        self._ops = 0
        self._orphans: list[tuple[Any, OpSpec]] = []
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self._targets_seen: set[str] = set()
        self._closing = False
        self._closed = False
        self.proxies = MemberProxyPool(config.proxies, config.proxy_max_failures, config.proxy_cooldown_s)
        self.store = open_store(self.store_url, self.namespace)
        self.events = EventLog(self.store, max_len=None)
        self.guardrails = open_guardrails(self.store_url, self.namespace)
        self._lease_stop = threading.Event()
        self._lease_thread: threading.Thread | None = None
        try:
            self._take_lease()
            self.done_targets = self._open_chain(key)
            self.executor: Executor = self._start_executor(executor)
        except BaseException:
            self._lease_stop.set()
            if hasattr(self, "chain"):
                self.chain.close()  # stops its flusher and closes the sink; nothing was appended yet
            self.guardrails.release(self._lease_name, self._token)
            self.store.close()
            raise
        self.chain.append("campaign.resumed" if config.resume else "campaign.started", {
            "members": len(config.members), "active_concurrency": config.active_concurrency,
            "rate_limit_rps": config.rate_limit.per_target_rps, "breaker": config.breaker.model_dump(),
            "nodes": self.executor.nodes(), "completed_targets": len(self.done_targets),
        })
        self.chain.flush()

    # --- setup ----------------------------------------------------------------------------------
    @property
    def _lease_name(self) -> str:
        return f"campaign:{self.campaign_id}"

    def _take_lease(self) -> None:
        deadline = time.monotonic() + self.config.lease_wait_s
        while (left := self.guardrails.claim(self._lease_name, self._token, self.config.lease_ttl_s)) > 0:
            if time.monotonic() + min(left, 0.2) > deadline:
                raise CampaignLeaseHeld(self.campaign_id, left)
            time.sleep(min(left, 0.2))  # e.g. a SIGKILLed driver's lease running out

        def renew() -> None:
            while not self._lease_stop.wait(self.config.lease_ttl_s / 3):
                try:
                    if self.guardrails.claim(self._lease_name, self._token, self.config.lease_ttl_s) > 0:
                        log.error("campaign %s: lease taken by another driver", self.campaign_id)
                except Exception:
                    log.exception("campaign %s: lease renewal failed; retrying", self.campaign_id)

        self._lease_thread = threading.Thread(target=renew, name=f"lease:{self.campaign_id}", daemon=True)
        self._lease_thread.start()

    def _open_chain(self, key: SigningKey | None) -> dict[str, dict[str, Any]]:
        cfg = self.config
        earlier = A.receipts_in_log(self.events, self.campaign_id)
        if earlier and not cfg.resume:
            raise CampaignError(f"campaign id {self.campaign_id!r} already has {len(earlier)} receipts in "
                                f"{redact_url(self.store_url)}; pass resume=True to continue it, or use a new id")
        if earlier and key is not None and earlier[-1].get("key_id") not in (None, key.key_id):
            raise AuditKeyError(f"campaign {self.campaign_id!r} was signed with key {earlier[-1]['key_id']}, "
                                f"not with this key ({key.key_id}); resume with the same key")
        sink = None
        if cfg.audit.sink is not None:
            sink = A.NdjsonSink(cfg.audit.sink)
            last = sink.last_receipt()
            if last is not None and (last.get("campaign") != self.campaign_id or not cfg.resume):
                sink.close()
                raise CampaignError(f"audit sink {cfg.audit.sink} already holds a chain "
                                    f"(campaign {last.get('campaign')!r}); use another file")
            A.sync_sink(sink, earlier, self.campaign_id)
        self.chain = A.AuditChain(self.campaign_id, key, self.events, sink)
        if earlier:
            self.chain.continue_from(earlier[-1])
        self.chain.start_background_flush()
        done: dict[str, dict[str, Any]] = {}
        for r in earlier:
            if r["kind"] == "campaign.member.complete" and r["payload"].get("target") is not None:
                done[r["payload"]["target"]] = r["payload"]
        return done

    def _start_executor(self, kind: str) -> Executor:
        identities = dict(enumerate(self.config.members))
        threads = self.config.placement.threads_per_worker
        if kind == "local":
            # Chromium lives in browser/ (Playwright, psutil): the campaign core never imports it at
            # module level, so it is loaded here, when a local executor starts and hands it to its members
            from fleet_ray.browser.campaign import ChromiumPages

            rt = MemberRuntime(self.campaign_id, self.config, self.guardrails, self.events, self.policy, identities,
                               pages=ChromiumPages())
            return LocalExecutor(rt, min(threads or self.config.active_concurrency, 512))
        # every Ray call of a campaign is in actors/: loaded only when Ray workers start, so a local
        # campaign (and importing fleet_ray.campaign) never imports Ray
        from fleet_ray.actors.campaign_workers import RayExecutor

        return RayExecutor(self.campaign_id, self.config, self.store_url, self.namespace, self.policy, identities)

    # --- what the dispatch loop (engine.CoordinatorRun) calls ----------------------------------------------
    @property
    def closing(self) -> bool:
        return self._closing

    def _check_open(self) -> None:
        if self._closing:
            raise CampaignClosed(self.campaign_id)

    def _begin_run(self) -> None:
        with self._lock:
            if self._closing:
                raise CampaignClosed(self.campaign_id)
            self._runs += 1

    def _end_run(self) -> None:
        with self._lock:
            self._runs -= 1
            self._changed.notify_all()

    def take_member(self, pinned: int | None) -> int | None:
        with self._lock:
            if pinned is not None:
                if pinned in self._busy:
                    return None
                self._busy.add(pinned)
                return pinned
            n = len(self.config.members)
            for i in range(n):
                m = (self._cursor + i) % n
                if m not in self._busy:
                    self._busy.add(m)
                    self._cursor = (m + 1) % n
                    return m
            return None

    def take_slot(self) -> bool:
        with self._lock:
            if self._active >= self.config.active_concurrency:
                return False
            self._active += 1
            return True

    def release_member(self, member: int, slot: bool = True) -> None:
        with self._lock:
            self._busy.discard(member)
            if slot:
                self._active -= 1
            self._changed.notify_all()

    def idle_wait(self, timeout: float) -> None:
        self._reap_orphans()
        with self._lock:
            self._changed.wait(timeout)

    def orphan(self, items: list[tuple[Any, OpSpec]]) -> None:
        with self._lock:
            self._orphans.extend(items)

    def _reap_orphans(self, timeout: float = 0.0) -> None:
        with self._lock:
            items = list(self._orphans)
        if not items:
            return
        done = {h for h, _ in self.executor.wait([h for h, _ in items], timeout)}
        for h, spec in items:
            if h in done:
                with self._lock:
                    self._orphans.remove((h, spec))
                self.release_member(spec.member)

    def flush(self, wait: bool = True) -> None:
        if wait:
            self.chain.flush()
        else:
            self.chain.flush_soon()

    def identity(self, member: int | None) -> str:
        return self.config.members[member].id if member is not None and member >= 0 else "-"  # type: ignore[return-value]

    def prepare(self, w: Work, member: int, coordinator: str) -> tuple[OpSpec, MemberResult | None]:
        with self._lock:
            self._ops += 1
            op_id = f"{self._token[:8]}-{self._ops}"
        host = target_host(w.target_ref) if w.target_ref else None
        spec = OpSpec(op_id=op_id, member=member, input=w.input, stage=w.stage, target=host,
                      target_ref=w.target_ref)
        if host:
            with self._lock:
                self._targets_seen.add(host)
        decision = evaluate(self.policy, PolicyRequest(
            campaign_id=self.campaign_id, capabilities=capabilities("dispatch", member, host), member=member,
            target=host, url=w.target_ref))
        if not decision.allow:
            caps = capabilities("dispatch", member, host)
            return spec, self.refused(w, member, coordinator, PolicyDenied(decision.reason or "denied", caps), spec)
        if host and self.config.breaker.enabled:
            state = self.guardrails.breaker_state(host, self.config.breaker)
            if state.tripped:
                return spec, self.refused(w, member, coordinator, CircuitOpen(host, state.reason), spec)
        spec.proxy = self.config.members[member].proxy or self.proxies.for_member(member)
        return spec, None

    def _payload(self, res: MemberResult, coordinator: str, **extra: Any) -> dict[str, Any]:
        p = {"member": res.member, "identity": res.identity, "op_id": res.op_id, "coordinator": coordinator,
             "stage": res.stage, "target": res.target, "node": res.node, **extra}
        if res.ok:
            p["value"] = A.jsonable(res.value, self.config.audit.inline_value_bytes)
        else:
            p["error_type"], p["error"] = res.error_type, res.error
        return p

    def refused(self, w: Work, member: int | None, coordinator: str, exc: FleetError,
                spec: OpSpec | None = None) -> MemberResult:
        """A result for work that never ran (guardrail refusal, lost race, closing)."""
        outcome = OpOutcome(op_id=spec.op_id if spec else "-", member=member if member is not None else -1,
                            ok=False, error_type=type(exc).__name__, error=str(exc), exc=exc,
                            cancelled=type(exc).__name__ == "MemberCancelled")
        op = spec or OpSpec(op_id="-", member=outcome.member, input=w.input, stage=w.stage, target_ref=w.target_ref)
        res = to_result(outcome, self.identity(member), op)
        kind = "campaign.member.cancelled" if res.cancelled else "campaign.member.failed"
        with self._lock:
            self.counts["cancelled" if res.cancelled else "failed"] += 1
        self.chain.append(kind, self._payload(res, coordinator, refused=True))
        return res

    def settle(self, outcome: OpOutcome, w: Work, spec: OpSpec, coordinator: str,
               lost_race: bool = False) -> MemberResult:
        for rec in outcome.requests:
            if spec.proxy:
                self.proxies.report(spec.proxy, rec.ok, rec.reputation_hit, spec.member)
            self.chain.append("campaign.request", {
                "member": spec.member, "op_id": spec.op_id, "target": rec.target,
                "url": redact_url(rec.url) if rec.url else None, "method": rec.method, "status": rec.status,
                "ok": rec.ok, "error": rec.error, "sent_at": round(rec.sent_at, 6),
                "elapsed_ms": round(rec.elapsed_ms, 3), "proxy": rec.proxy_id})
        for trip in outcome.trips:
            self.chain.append("campaign.breaker.tripped", trip)
            self._notify(BreakerTrip(**trip))
        ident = self.identity(spec.member)
        if lost_race:
            late = outcome.ok
            exc = MemberCancelled(spec.member, "race won by a sibling" + ("; late result suppressed" if late else ""))
            outcome = OpOutcome(op_id=outcome.op_id, member=outcome.member, ok=False, error_type="MemberCancelled",
                                error=str(exc), exc=exc, cancelled=True, node=outcome.node)
            res = to_result(outcome, ident, spec, suppressed=late)
            kind = "campaign.member.cancelled"
            extra: dict[str, Any] = {"late_result_suppressed": late}
        else:
            res = to_result(outcome, ident, spec)
            kind = ("campaign.member.complete" if res.ok else
                    "campaign.member.cancelled" if res.cancelled else "campaign.member.failed")
            extra = {}
        with self._lock:
            self.counts["completed" if res.ok else "cancelled" if res.cancelled else "failed"] += 1
        self.chain.append(kind, self._payload(res, coordinator, **extra))
        return res

    def race_won(self, res: MemberResult, coordinator: str) -> None:
        self.chain.append("campaign.race.won", {"member": res.member, "op_id": res.op_id, "coordinator": coordinator})

    def _notify(self, trip: BreakerTrip) -> None:
        log.warning("campaign %s: breaker for %s tripped (%d/%d failures)", self.campaign_id, trip.target,
                    trip.failures, trip.samples)
        if self.notifier is not None:
            try:
                self.notifier(trip)
            except Exception:
                log.exception("breaker notifier raised")

    # --- status and teardown ----------------------------------------------------------------------
    def status(self) -> CampaignStatus:
        with self._lock:
            counts, active, seen = dict(self.counts), self._active, sorted(self._targets_seen)
        breakers = [self.guardrails.breaker_state(h, self.config.breaker) for h in seen]
        return CampaignStatus(
            campaign_id=self.campaign_id, members=len(self.config.members), active=active, closed=self._closed,
            circuit_tripped=any(b.tripped for b in breakers), breakers=breakers, proxies=self.proxies.health(),
            nodes=self.executor.nodes(), **counts,
            audit=AuditStatus(signing=self.chain.signing, key_id=self.chain.key_id, receipts=self.chain.last_seq + 1,
                              sink=str(self.config.audit.sink) if self.config.audit.sink else None),
        )

    def destroy(self) -> None:
        """Refuse new work, wait for every operation in flight, close the audit chain. Idempotent:
        when it returns, nothing more is written to the event log or the NDJSON sink."""
        with self._lock:
            if self._closed:
                return
            self._closing = True
            while self._runs > 0:  # coordinator calls in other threads drain their in-flight work
                self._changed.wait(0.1)
        while True:
            with self._lock:
                if not self._orphans:
                    break
            self._reap_orphans(timeout=0.5)
        self.chain.close("campaign.closed", {**self.counts, "receipts": self.chain.last_seq + 2})
        self._closed = True
        self._lease_stop.set()
        try:
            self.guardrails.release(self._lease_name, self._token)
            self.executor.shutdown()
        finally:
            self.guardrails.close()
            self.store.close()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.destroy()
