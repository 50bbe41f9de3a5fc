"""Driver scripts the multi-host tests (and ``bench.multihost``) run ON the head host, as an operator
would: ``python head_driver.py <command> '<json args>'`` in a login shell there (``fleet-env.sh``
exported), against the fleet ``fleet-node.sh head`` started. Each command prints one JSON line
after :data:`MARK`. Nothing here imports the test suite: it runs inside another host's namespaces.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ray

import fleet_ray
from fleet_ray.campaign import Campaign, SigningKey, verify_audit_log
from fleet_ray.campaign.ratelimit import max_in_window

MARK = "--fleet-json--"
FAST_HEALTH = {"period_s": 0.5, "timeout_s": 5}
FAST_HEAL = {"backoff_base_s": 0.5, "backoff_max_s": 2}


def out(value: Any) -> None:
    print(MARK + json.dumps(value, default=str), flush=True)


def connect():
    return fleet_ray.connect(address="auto")


def node_ips() -> dict[str, str]:
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def slots_view(fleet, pool: str) -> list[dict[str, Any]]:
    ips = node_ips()
    p = fleet.status().pool(pool)
    return [{"id": s.id, "state": s.state, "generation": s.generation, "node_id": s.node_id,
             "ip": ips.get(s.node_id or ""), "pid": s.pid} for s in p.slots] if p else []


class Target:
    """An HTTP target on this host's cluster address, logging the arrival time of every request."""

    def __init__(self, host: str):
        self.log: list[tuple[float, str]] = []
        log, lock = self.log, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with lock:
                    log.append((time.time(), self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- commands --------------------------------------------------------------------------------------
def cmd_nodes(args: dict) -> dict:
    ray.init(address="auto", logging_level="WARNING")
    head = ray.get_runtime_context().get_node_id()
    return {"head": head, "nodes": [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
                                     "resources": n.get("Resources", {})} for n in ray.nodes()]}


def cmd_apply(args: dict) -> dict:
    fleet = connect()
    fleet.apply(args["spec"])
    pools = [p["name"] for p in args["spec"]["pools"]]
    fleet.wait_until(lambda s: all(s.pool(n) and s.pool(n).counts.get("running", 0) == len(s.pool(n).slots) > 0
                                   for n in pools), args.get("timeout_s", 180))
    return {name: slots_view(fleet, name) for name in pools}


def cmd_status(args: dict) -> dict:
    fleet = connect()
    st = fleet.status()
    return {"pools": {p.name: {"state": p.state, "reason": p.reason, "counts": p.counts} for p in st.pools},
            "slots": {p.name: slots_view(fleet, p.name) for p in st.pools}}


def cmd_crash(args: dict) -> dict:
    """A continuous automation crashing on a worker host: its crash records and where it ran."""
    fleet = connect()
    pool = {"name": "chaos", "automation": "builtin.chaos", "slots": 1, "health": FAST_HEALTH, "heal": FAST_HEAL,
            "placement": {"resources": {args.get("tag", "browser"): 1}},
            "config": {"crash_after_s": 1.0, "phase": "fetch"}}
    fleet.apply({"pools": [pool]})
    deadline = time.monotonic() + args.get("timeout_s", 120)
    where: list[dict] = []
    while time.monotonic() < deadline:
        where = where or [s for s in slots_view(fleet, "chaos") if s["node_id"]]
        recs = [c for c in fleet.crashes("chaos") if c["generation"] == 1]
        later = [c for c in fleet.crashes("chaos") if c["generation"] == 2]
        if recs and later:  # the first crash is recorded and the position crashed again after it
            break
        time.sleep(0.2)
    events = [e for e in fleet.events(1000) if e["kind"] == "slot.crashed" and e.get("pool") == "chaos"]
    fleet.apply({"pools": []})
    return {"records": [c for c in fleet.crashes("chaos") if c["generation"] == 1], "slot": where[:1],
            "crashed_events_g1": len([e for e in events if e.get("generation") == 1]),
            "head": ray.get_runtime_context().get_node_id()}


def cmd_campaign(args: dict) -> dict:
    """A campaign on the worker hosts with the embedded store (default settings): runs, audit chain."""
    ray.init(address="auto", logging_level="WARNING")
    key = SigningKey.generate()
    cid = args.get("campaign_id", "mh-campaign")
    with Campaign(args.get("members", 4), campaign_id=cid, signing_key=key,
                  placement={"resources": {args.get("tag", "browser"): 1}}) as c:
        res = c.broadcast(lambda ctx, item: (ctx.member, ctx.node, item), "x")
        report = verify_audit_log(c.events, cid, key.verify_key())
        store_url = c.store_url
    return {"results": [[r.ok, r.value] for r in res], "audit_ok": report.ok, "receipts": report.receipts,
            "store_url": store_url, "head": ray.get_runtime_context().get_node_id()}


def cmd_ratelimit(args: dict) -> dict:
    """Members on two hosts hitting one target on the head: arrivals measured at the target."""
    ray.init(address="auto", logging_level="WARNING")
    target = Target(args["bind"])
    rate, n = args.get("rps", 5), args.get("requests", 30)
    try:
        with Campaign(args.get("members", 6), signing_key=SigningKey.generate(), active_concurrency=6,
                      store_url=args.get("store_url"), rate_limit={"per_target_rps": rate},
                      placement={"resources": {args.get("tag", "browser"): 1}}) as c:
            res = c.map_targets(lambda ctx, url: (ctx.fetch(url).status_code, ctx.node),
                                [f"{target.url}/r/{i}" for i in range(n)])
            store_url = c.store_url
    finally:
        target.close()
    arrivals = [t for t, p in target.log if p.startswith("/r/")]
    return {"ok": sum(r.ok and r.value[0] == 200 for r in res), "nodes": sorted({r.value[1] for r in res if r.ok}),
            "arrivals": len(arrivals), "max_in_1s": max_in_window(arrivals, 1.0),
            "max_in_095s": max_in_window(arrivals, 0.95), "rps": rate, "store_url": store_url}


def cmd_batch(args: dict) -> dict:
    """Submit ``items`` to ``pool`` and read every result: counts per item (lost / duplicated), items/s."""
    fleet = connect()
    n = args["items"]
    t0 = time.time()
    job = fleet.submit(args["pool"], [args.get("item", "x")] * n if args.get("same") else list(range(n)),
                       job_id=args.get("job_id"))
    if args.get("started"):  # the job is in the queue: the caller may now break things
        with open(args["started"], "w") as f:
            f.write(job.id)
    seen: dict[str, int] = {}
    failed = 0
    for r in job.results(timeout_s=args.get("timeout_s", 600)):
        seen[r.item_id] = seen.get(r.item_id, 0) + 1
        failed += not r.ok
    elapsed = time.time() - t0
    return {"items": n, "results": sum(seen.values()), "distinct": len(seen), "failed": failed,
            "duplicated": sum(c - 1 for c in seen.values() if c > 1), "lost": n - len(seen),
            "started_at": t0, "elapsed_s": elapsed, "items_per_s": n / elapsed if elapsed else None}


def cmd_monitor(args: dict) -> dict:
    """Append the fleet's status (pools and slots, with node IPs) to ``path`` every ``every_s`` as JSON
    lines ``{"t": wall clock, ...}`` until the file ``stop`` exists (or ``max_s`` passed)."""
    import os

    fleet = connect()
    deadline = time.monotonic() + args.get("max_s", 600)
    lines = 0
    with open(args["path"], "a") as f:
        while time.monotonic() < deadline and not os.path.exists(args["stop"]):
            try:
                st = fleet.status()
                ips = node_ips()
                row = {"t": time.time(), "pools": {
                    p.name: {"state": p.state, "reason": p.reason, "counts": p.counts,
                             "slots": [{"id": sl.id, "state": sl.state, "generation": sl.generation,
                                        "ip": ips.get(sl.node_id or "")} for sl in p.slots]} for p in st.pools}}
            except Exception as exc:  # the head answers slowly while a host is lost: note it, go on
                row = {"t": time.time(), "error": f"{type(exc).__name__}: {exc}"[:300]}
            f.write(json.dumps(row) + "\n")
            f.flush()
            lines += 1
            time.sleep(args.get("every_s", 0.25))
    return {"lines": lines}


COMMANDS = {name[4:]: fn for name, fn in globals().items() if name.startswith("cmd_")}

if __name__ == "__main__":
    out(COMMANDS[sys.argv[1]](json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
