"""What happens to a fleet when a worker host fails, on three real hosts (namespaces running the shipped
fleet-node.sh): connections reset while every process lives, a partition, a power loss, a host loss.
Batch work across each: every item exactly one result. Timings are the benchmark's (bench.multihost);
these tests check outcomes, polling with deadlines. Each test leaves both workers up for the next."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .drive import Monitor, all_running, drive, driver_result, holder, pool_ok, slots, start_batch, until
from .hosts import kill_spawned

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HEALTH = {"period_s": 0.5, "timeout_s": 5}


def pool(name: str, slots: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": name, "automation": "builtin.probe", "slots": slots, "concurrency": 2,
            "config": {"delay_s": 0.1, "phase": "work", **extra.pop("config", {})},
            "placement": {"resources": {"browser": 1}}, "health": HEALTH,
            "heal": {"backoff_base_s": 0.5, "backoff_max_s": 2}, **extra}


@pytest.fixture
def monitor(hosts, request):
    m = Monitor(hosts.head, request.node.name[:40])
    yield m
    m.close()


def in_cluster(hosts) -> set[str]:
    """IPs of the Ray nodes the head's GCS has alive."""
    return {n["ip"] for n in drive(hosts.head, "nodes")["nodes"] if n["alive"]}


@pytest.fixture(autouse=True)
def workers_up(hosts):
    """Every test leaves both workers alive and in the cluster, and no pool behind. A worker Ray declared
    dead (a partition longer than its health checks) left the cluster for good, as on a real host: it
    boots again. Hosts come back first, so a failed clean-up can't leave the next test a host short."""
    yield
    try:
        for w in hosts.workers:
            if w.alive:
                w.link_up()
        alive = in_cluster(hosts)
        for w in hosts.workers:
            if not w.alive or w.ip not in alive:
                w.restart()
    finally:
        drive(hosts.head, "apply", {"spec": {"pools": []}})


def crash_count(hosts, pool_name: str) -> list[dict[str, Any]]:
    return hosts.head.python(
        "import json, fleet_ray\n"
        f"print('--fleet-json--' + json.dumps(fleet_ray.connect(address='auto').crashes({pool_name!r})))")


def live_slot_actors(hosts) -> dict[str, int]:
    """Alive slot actors per position, from the GCS's actor table (what `ray list actors` shows)."""
    return hosts.head.python(
        "import json, ray\nfrom ray._private import state\nray.init(address='auto', logging_level='ERROR')\n"
        "from fleet_ray.names import parse_slot_actor_name\nper = {}\n"
        "for a in state.actors().values():\n"
        "    p = parse_slot_actor_name(a.get('Name') or '')\n"
        "    if p and a.get('State') == 'ALIVE':\n"
        "        per[f'{p[0]}:{p[1]}'] = per.get(f'{p[0]}:{p[1]}', 0) + 1\n"
        "print('--fleet-json--' + json.dumps(per))")


def exactly_once(out: dict[str, Any], n: int) -> None:
    assert (out["items"], out["distinct"], out["lost"], out["duplicated"]) == (n, n, 0, 0), out


def test_connections_reset_while_every_process_lives_kill_no_slot(hosts, monitor):
    placed = drive(hosts.head, "apply", {"spec": {"pools": [pool("steady")]}})["steady"]
    victim = holder(hosts, placed)
    gens = {s["id"]: s["generation"] for s in placed}
    job = start_batch(hosts.head, "steady", 200, "reset")
    t0 = time.time()
    assert victim.reset_connections() > 0  # the head's connections to its raylet and slots, at least
    job.wait(timeout=300)
    exactly_once(driver_result(hosts.head, "reset.log"), 200)
    after = monitor.wait(all_running("steady", 2), after=time.time())
    assert {s["id"]: s["generation"] for s in slots(after, "steady")} == gens  # nobody was replaced
    assert all(s["generation"] == gens[s["id"]] for r in monitor.rows(t0) for s in slots(r, "steady"))
    assert crash_count(hosts, "steady") == []


def test_a_partition_shows_unreachable_slots_and_ends_with_exactly_the_desired_slots(hosts, monitor):
    placed = drive(hosts.head, "apply", {"spec": {"pools": [pool("part")]}})["part"]
    cut = holder(hosts, placed)
    on_cut = {s["id"] for s in placed if s["ip"] == cut.ip}
    job = start_batch(hosts.head, "part", 300, "part")
    cut.link_down()
    t_cut = time.time()
    try:
        # while it lasts: the cut host's slots are unreachable and the pool is not ok
        row = monitor.wait(lambda r: any(s["state"] == "unreachable" for s in slots(r, "part")), after=t_cut)
        assert {s["id"] for s in slots(row, "part") if s["state"] == "unreachable"} <= on_cut
        assert row["pools"]["part"]["state"] != "ok"
        time.sleep(max(0.0, 20 - (time.time() - t_cut)))  # the partition lasts 20 s
    finally:
        cut.link_up()
    job.wait(timeout=300)
    exactly_once(driver_result(hosts.head, "part.log"), 300)
    final = monitor.wait(pool_ok("part", 2), after=time.time())
    per_position = live_slot_actors(hosts)
    assert {k: v for k, v in per_position.items() if k.startswith("part:")} == {"part:0": 1, "part:1": 1}
    # the GCS's table can't see a process it gave up on: look on the cut host itself. A position that got
    # a new generation must have no process of its old one left there (Ray stops a node it declared dead
    # once it hears from it again); one that didn't is the same actor, still the only one.
    now = {s["id"]: s["generation"] for s in slots(final, "part")}
    replaced = [s for s in placed if s["ip"] == cut.ip and now[s["id"]] != s["generation"]]

    def old_gone():
        return all(cut.run(f"kill -0 {s['pid']} 2>/dev/null && echo alive || echo gone", 30,
                           login=False).stdout.strip() == "gone" for s in replaced)

    until(old_gone, 120, f"old slot processes still alive on {cut.tag}: {replaced}")


def test_power_loss_replaces_draining_slots_without_waiting_out_the_drain(hosts, monitor):
    spec = pool("drainy", config={"hang_on": ["stuck"]}, recycle={"drain_timeout_s": 600})
    placed = drive(hosts.head, "apply", {"spec": {"pools": [spec]}})["drainy"]
    job = start_batch(hosts.head, "drainy", 2, "stuck", same=True, item="stuck", timeout_s=600)
    # both slots hold a hanging item; recycling them starts drains that can't finish for 600 s
    victim = holder(hosts, placed)
    lost = [s for s in placed if s["ip"] == victim.ip]
    for s in lost:
        hosts.head.run(f"fleet-ray recycle {s['id']}", 60, check=True)
    monitor.wait(lambda r: all(x["state"] == "draining" for x in slots(r, "drainy") if x["id"] in {s["id"] for s in lost}),
                 after=time.time())
    t_off = time.time()
    victim.power_off(cut_link=True)
    # replaced well within the 600 s drain: not left draining against a host that can't answer
    monitor.wait(all_running("drainy", 2, off=victim.ip), after=t_off, timeout_s=240)
    crashes = crash_count(hosts, "drainy")
    for s in lost:
        mine = [c for c in crashes if c["slot"] == s["id"] and c["generation"] == s["generation"]]
        assert len(mine) == 1, crashes
        assert "host" in mine[0]["cause"].lower() or "node" in mine[0]["cause"].lower()
    kill_spawned(job)


def test_host_loss_moves_slots_and_batch_items_to_the_other_host(hosts, monitor):
    placed = drive(hosts.head, "apply", {"spec": {"pools": [pool("loss")]}})["loss"]
    victim = holder(hosts, placed)
    job = start_batch(hosts.head, "loss", 300, "loss")
    t_off = time.time()
    victim.power_off()  # every process of the host, at once; its kernel still answers
    monitor.wait(all_running("loss", 2, off=victim.ip), after=t_off, timeout_s=240)
    job.wait(timeout=300)
    exactly_once(driver_result(hosts.head, "loss.log"), 300)
    assert {k: v for k, v in live_slot_actors(hosts).items() if k.startswith("loss:")} == {"loss:0": 1, "loss:1": 1}
