"""What crosses hosts, on three real hosts (namespaces running the shipped fleet-node.sh): a crash on a
worker host is recorded with its slot-side context, a campaign on worker hosts runs on the embedded
store and writes its signed audit chain, and a per-target rate limit holds cluster-wide, measured at
the target on the head. Worker hosts can't reach the head's 127.0.0.1, where the fleet's Redis and the
embedded store's file live: all of it goes through the store relay."""

from __future__ import annotations

from .drive import drive


def test_a_crash_on_a_worker_host_is_recorded_once_with_the_slot_side_context(hosts):
    out = drive(hosts.head, "crash", {"tag": "browser"})
    worker_ips = {w.ip for w in hosts.workers}
    assert out["slot"] and out["slot"][0]["ip"] in worker_ips  # it ran on a worker host, not the head
    assert len(out["records"]) == 1, out["records"]
    rec = out["records"][0]
    assert (rec["task"], rec["phase"], rec["step"]) == ("run", "fetch", "crash after 1.0s")
    assert rec["error_type"] == "RuntimeError" and "slot" in rec["sources"]
    assert out["crashed_events_g1"] == 1


def test_a_campaign_on_worker_hosts_runs_on_the_embedded_store_with_its_audit_chain(hosts):
    out = drive(hosts.head, "campaign", {"members": 4, "tag": "browser", "campaign_id": "mh-c1"})
    assert out["store_url"].startswith("sqlite://")  # the default: a file on the head's disk
    assert [ok for ok, _ in out["results"]] == [True] * 4
    assert [v[0] for _, v in out["results"]] == [0, 1, 2, 3]
    nodes = {v[1] for _, v in out["results"]}
    assert len(nodes) == 2 and out["head"] not in nodes  # members on both worker hosts
    assert out["audit_ok"] and out["receipts"] >= 4


def test_a_per_target_rate_limit_holds_across_hosts_at_the_target(hosts):
    # the embedded store (a file on the head): the case that silently became per host
    out = drive(hosts.head, "ratelimit", {"bind": hosts.head.ip, "rps": 5, "requests": 30, "members": 6})
    assert out["store_url"].startswith("sqlite://")
    assert out["ok"] == 30 and out["arrivals"] == 30
    assert len(out["nodes"]) == 2  # the members that sent them sat on both worker hosts
    # per host, each of the two would allow 5/s: 10 in some second. Cluster-wide, the limiter spaces the
    # sends 1/rate apart, so the target never sees more than the rate in a window 5% short of a second
    # (what arrives exactly 1 s apart can meet one request's delay on the veth and another's none)
    assert out["max_in_095s"] <= 5, out
    assert out["max_in_1s"] <= 6, out
