"""Members on Ray: worker actors spread over the eligible nodes. Every Ray call of a campaign is here.

Each worker actor hosts the members ``m`` with ``m % workers == index`` (so a member's cookie jar
and HTTP connections stay put), runs their operations in threads (``threads_per_worker``) and takes
``cancel`` calls in a separate concurrency group so they never queue behind work. Workers are named
``campaign:<id>:w<index>:<token>`` for ``ray list actors`` and the dashboard, owned by the driver
(they go when it goes) and pinned to their node. A worker builds its member runtime from the store URL:
guardrail state from :func:`fleet_ray.store.open_guardrails` — on a host that can't open the store (a SQLite
file or a loopback Redis on the driver's host) through a relay on the driver's node
(:mod:`fleet_ray.actors.store_relay`) — Chromium pages from
:class:`fleet_ray.browser.campaign.ChromiumPages`. :class:`~fleet_ray.campaign.campaign.Campaign`
imports this module only when it starts Ray workers.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fleet_ray.browser.campaign import ChromiumPages
from fleet_ray.campaign.config import CampaignConfig, CampaignPlacement, MemberIdentity
from fleet_ray.campaign.member import MemberRuntime
from fleet_ray.campaign.policy import Policy
from fleet_ray.campaign.results import OpOutcome, OpSpec, failure
from fleet_ray.client.fleet import init_ray
from fleet_ray.errors import CampaignError, MemberCancelled
from fleet_ray.names import HEAD_RESOURCE
from fleet_ray.observe.events import EventLog
from fleet_ray.ray_boundary import task_cause
from fleet_ray.store import url_for_actors

from .store_relay import ensure_relay, open_guardrails_near, open_store_near

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, concurrency_groups={"control": 2})
class CampaignWorker:
    def __init__(self, campaign_id: str, config: CampaignConfig, store_url: str, namespace: str,
                 policy: Policy | None, identities: dict[int, MemberIdentity], relay: str):
        node = ray.get_runtime_context().get_node_id()
        # a worker on another host than the store's goes through the driver-side relay (actors/store_relay.py)
        events = EventLog(open_store_near(store_url, namespace, relay), max_len=None)
        self.rt = MemberRuntime(campaign_id, config, open_guardrails_near(store_url, namespace, relay), events,
                                policy, identities, node=node, pages=ChromiumPages())
        self._fns: dict[str, Any] = {}

    def ping(self) -> tuple[str, int]:
        return self.rt.node, os.getpid()

    def run(self, spec: OpSpec, fn_box: list[Any]) -> OpOutcome:
        ref = fn_box[0]
        fn = self._fns.get(ref.hex())
        if fn is None:
            fn = self._fns[ref.hex()] = ray.get(ref)
        return self.rt.run(spec, fn)

    @ray.method(concurrency_group="control")
    def cancel(self, op_ids: list[str]) -> None:
        self.rt.cancel(op_ids)

    @ray.method(concurrency_group="control")
    def close(self) -> None:
        self.rt.close()


def eligible_nodes(placement: CampaignPlacement) -> list[str]:
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        labels = n.get("Labels") or {}
        if not placement.include_head and HEAD_RESOURCE in res:
            continue
        if any(res.get(k, 0) < v for k, v in placement.resources.items()):
            continue
        if any(labels.get(k) != v for k, v in placement.labels.items()):
            continue
        out.append(n["NodeID"])
    return sorted(out)


class RayExecutor:
    def __init__(self, campaign_id: str, config: CampaignConfig, store_url: str, namespace: str,
                 policy: Policy | None, identities: dict[int, MemberIdentity], ready_timeout_s: float = 120.0):
        if not ray.is_initialized():
            init_ray()
        nodes = eligible_nodes(config.placement)
        if not nodes:
            p = config.placement
            raise CampaignError(f"no alive node matches the campaign placement (resources={p.resources}, "
                                f"labels={p.labels}, include_head={p.include_head})")
        # the store as this driver opened it, for workers on hosts that can't (a file, a loopback Redis)
        store_url = url_for_actors(store_url)
        token = os.urandom(3).hex()
        relay = f"campaign:{campaign_id}:store-relay:{token}"
        self._relay = ensure_relay(relay, store_url, namespace, ray.get_runtime_context().get_node_id(),
                                   detached=False)
        k = config.placement.workers or len(nodes)
        threads = config.placement.threads_per_worker or min(128, math.ceil(config.active_concurrency / k) + 1)
        self.workers = []
        for i in range(k):
            mine = {m: ident for m, ident in identities.items() if m % k == i}
            self.workers.append(CampaignWorker.options(
                name=f"campaign:{campaign_id}:w{i}:{token}", max_concurrency=threads,
                scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False),
            ).remote(campaign_id, config, store_url, namespace, policy, mine, relay))
        try:
            pings = ray.get([w.ping.remote() for w in self.workers], timeout=ready_timeout_s)
        except Exception as exc:
            self.shutdown()
            raise CampaignError(f"campaign workers did not start: {type(exc).__name__}: {exc}") from exc
        self._nodes = [node for node, _ in pings]
        self.pids = [pid for _, pid in pings]
        self._specs: dict[Any, OpSpec] = {}

    def register(self, fn: Any) -> Any:
        return [ray.put(fn)]  # boxed: Ray hands the ref itself to the worker, which caches the function

    def submit(self, spec: OpSpec, fn: Any) -> Any:
        ref = self.workers[spec.member % len(self.workers)].run.remote(spec, fn)
        self._specs[ref] = spec
        return ref

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, OpOutcome]]:
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        try:
            values = ray.get(ready)
        except Exception:
            values = None
        out = []
        for i, ref in enumerate(ready):
            spec = self._specs.pop(ref)
            if values is not None:
                out.append((ref, values[i]))
                continue
            try:
                out.append((ref, ray.get(ref)))
            except ray.exceptions.TaskCancelledError:
                out.append((ref, failure(spec, MemberCancelled(spec.member, "cancelled before it started"))))
            except ray.exceptions.RayActorError as exc:
                out.append((ref, OpOutcome(op_id=spec.op_id, member=spec.member, ok=False, error_type="WorkerLost",
                                           error=f"the member's worker died: {type(exc).__name__}")))
            except ray.exceptions.RayTaskError as exc:
                out.append((ref, failure(spec, task_cause(exc))))
        return out

    def cancel(self, specs: list[OpSpec]) -> None:
        by_worker: dict[int, list[str]] = {}
        for s in specs:
            by_worker.setdefault(s.member % len(self.workers), []).append(s.op_id)
        for i, ops in by_worker.items():
            self.workers[i].cancel.remote(ops)

    def nodes(self) -> list[str]:
        return sorted(set(self._nodes))

    def shutdown(self) -> None:
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=10)
        except Exception as exc:  # dead workers have nothing to close
            log.debug("closing campaign workers: %s", type(exc).__name__)
        for w in [*self.workers, self._relay]:
            try:
                ray.kill(w)
            except Exception:
                pass
