"""The event log's cap never deletes a campaign's audit receipts (issue 15, item 4)."""

from __future__ import annotations

from fleet_ray.campaign.audit import AuditChain, receipts_in_log
from fleet_ray.campaign.signing import SigningKey
from fleet_ray.campaign.verify import verify_audit_log
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC
from fleet_ray.store import keys
from fleet_ray.testing import MemoryStore


def test_receipts_survive_the_supervisors_cap_and_the_chain_still_verifies():
    store, key, hlc = MemoryStore(), SigningKey.generate(), HLC()
    chain = AuditChain("c1", key, EventLog(store, max_len=None))
    for i in range(5):
        chain.append("campaign.member.complete", {"member": i})
    chain.close("campaign.closed", {"completed": 5})

    supervisor = EventLog(store, max_len=50)  # the supervisor's capped writer, sharing the log
    for _ in range(4):
        batch = []
        for _ in range(40):
            ts = hlc.tick()
            batch.append(Event(kind="slot.ready", physical=ts.physical, counter=ts.counter, origin="supervisor"))
        supervisor.append(batch)

    assert store.log_len(keys.EVENT_LOG) == 50  # the cap still holds for everything else
    assert len(receipts_in_log(supervisor, "c1")) == 6
    report = verify_audit_log(supervisor, "c1", key.verify_key(), require_closed=True)
    assert report.ok and report.receipts == 6 and report.closed


def test_one_log_to_readers_receipts_and_events_merged_in_causal_order():
    store, key = MemoryStore(), SigningKey.generate()
    log = EventLog(store, max_len=100)
    hlc = HLC()
    ts = hlc.tick()
    log.append([Event(kind="slot.ready", physical=ts.physical, counter=ts.counter, origin="supervisor")])
    chain = AuditChain("c2", key, EventLog(store, max_len=None), hlc=hlc)
    chain.append("campaign.member.complete", {"member": 0})
    chain.flush()
    ts = hlc.tick()
    log.append([Event(kind="slot.draining", physical=ts.physical, counter=ts.counter, origin="supervisor")])
    assert [e.kind for e in log.query()] == ["slot.ready", "campaign.member.complete", "slot.draining"]
    assert [e.kind for e in log.query(origin="campaign:c2")] == ["campaign.member.complete"]
    assert log.size() == 3
