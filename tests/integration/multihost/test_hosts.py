"""The namespace hosts themselves, and Ray's own tools on them: isolation really holds, the shipped
fleet-node.sh brings up three Ray nodes with the right tags and addresses, ``ray status`` /
``ray list actors`` / the Ray dashboard's API answer on the head with the cluster's token (and the
README's command), ``fleet-ray status`` works on the head, and a pool placed by resource tags lands on
the worker hosts with status naming each slot's real node. One cluster for the module; the first two
tests run before it exists (one namespace cluster at a time).
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.integration.conftest import wait_for

from .drive import drive
from .hosts import API_PORT, RAY_PORT, REDIS_PORT, HostCluster, HostError, HostSpec, namespaces_unavailable

pytestmark = pytest.mark.timeout(600)

README_ENV = ". ~/fleet-ray/deploy/fleet-env.sh && "  # what the README tells an operator to run first
DASHBOARD = "http://127.0.0.1:8265"


def needs_namespaces():
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)


def can_connect(host, ip: str, port: int) -> bool:
    done = host.run(f"(: </dev/tcp/{ip}/{port}) 2>/dev/null && echo open || echo closed", 30, login=False)
    return done.stdout.strip() == "open"


# -- before the shared cluster exists ---------------------------------------------------------------------
def test_a_cluster_that_fails_to_start_is_torn_down_before_the_error(tmp_path):
    needs_namespaces()
    c = HostCluster([HostSpec("a", "bare"), HostSpec("w1", "worker")], base_dir=tmp_path)
    with pytest.raises(HostError, match="RAY_HEAD_IP"):  # no head: fleet-node.sh worker refuses
        c.start()
    assert c.leftovers() == []
    assert all(h.pids() == [] and not h.alive for h in c)


def test_tear_down_kills_what_a_host_daemonized(tmp_path):
    needs_namespaces()
    with HostCluster([HostSpec("a", "bare")], base_dir=tmp_path) as c:
        a = c["a"]
        a.run("setsid nohup sleep 600 >/dev/null 2>&1 < /dev/null &", check=True)
        pids = wait_for(lambda: [p for p in a.pids() if "sleep" in open(f"/proc/{p}/cmdline").read()], 10, 0.05)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert c.leftovers() == []


# -- the shared cluster ---------------------------------------------------------------------------------
def test_hosts_are_isolated_from_each_other_and_from_this_machine(hosts):
    head, w1, w2 = hosts["head"], hosts["w1"], hosts["w2"]
    # the head's Redis, dashboard and API listen on the head's loopback only
    for port in (REDIS_PORT, 8265, API_PORT):
        assert can_connect(head, "127.0.0.1", port), port
        assert not can_connect(w1, "127.0.0.1", port), port  # a worker's 127.0.0.1 is its own
        assert not can_connect(w1, head.ip, port), port
    assert can_connect(w1, head.ip, RAY_PORT) and can_connect(w2, head.ip, RAY_PORT)  # the network works
    # own addresses, a default route via the bridge (Ray's node-IP detection), nothing else
    addrs = w1.run("ip -4 -o addr show | awk '{print $2, $4}'; ip route show default", check=True).stdout
    assert f"eth0 {w1.ip}/24" in addrs and f"default via {hosts.bridge_ip}" in addrs
    assert head.ip not in addrs
    # private /tmp, /dev/shm and $HOME; what a host writes in $HOME is on its disk (Host.home)
    w1.run("echo w1 > /tmp/mark && echo w1 > /dev/shm/mark && echo w1 > ~/mark", check=True)
    assert head.run("cat /tmp/mark /dev/shm/mark ~/mark 2>/dev/null; true").stdout == ""
    assert not os.path.exists("/tmp/mark") or open("/tmp/mark").read() != "w1\n"
    assert (w1.home / "mark").read_text() == "w1\n" and not (head.home / "mark").exists()
    # Ray's session directory (one name cluster-wide) is each host's own: only the head's has GCS logs
    gcs_log = "ls /tmp/ray/session_latest/logs/ | grep -c '^gcs_server' || true"
    assert int(head.run(gcs_log).stdout) > 0
    assert int(w1.run(gcs_log).stdout) == 0 and int(w2.run(gcs_log).stdout) == 0
    # private process views: PID 1 is the host's init; the GCS runs on the head only
    for h in hosts:
        init = h.run("cat /proc/1/cmdline | tr '\\0' ' '", check=True).stdout
        assert "hostinit.py" in init, init
    assert head.run("pgrep -x gcs_server").stdout.strip() != ""
    assert w1.run("pgrep -x gcs_server").returncode == 1 and w2.run("pgrep -x gcs_server").returncode == 1
    assert head.run("pgrep -f fleet-redis-watc[h]").returncode == 0  # the head's Redis watcher ...
    assert w1.run("pgrep -f fleet-redis-watc[h]").returncode == 1  # ... isn't seen on a worker
    seen = set(w1.run("ls /proc | grep -E '^[0-9]+$'", check=True).stdout.split())
    assert len(seen) < 60, seen  # its own few dozen processes, not the machine's
    # the repository at ~/fleet-ray (read-only) and at its own path (the editable install)
    assert w1.run("test -f ~/fleet-ray/deploy/fleet-node.sh && ! touch ~/fleet-ray/x 2>/dev/null").returncode == 0
    where = w1.python("import fleet_ray, json; print(json.dumps(fleet_ray.__file__))")
    assert where.startswith(str(hosts.repo))


def test_three_ray_nodes_with_the_hosts_tags_and_addresses(hosts):
    nodes = {n["ip"]: n for n in hosts.ray_nodes() if n["alive"]}
    assert set(nodes) == {h.ip for h in hosts}, nodes
    head = nodes[hosts.head.ip]
    assert "browser" not in head["resources"] and "node:__internal_head__" in head["resources"]
    for w, region in ((hosts["w1"], "eu"), (hosts["w2"], "us")):
        assert nodes[w.ip]["resources"]["browser"] == 4
        assert nodes[w.ip]["labels"].get("region") == region
    assert not any(ip.startswith("127.") for ip in nodes)


def test_ray_status_list_actors_and_the_dashboard_api_work_on_the_head_with_the_token(hosts):
    head = hosts.head
    token = (head.home / ".ray" / "auth_token").read_text().strip()
    assert token == hosts.token and all((h.home / ".ray" / "auth_token").read_text() == token for h in hosts)
    # the README's command, in a shell that has nothing else set up
    st = head.run(README_ENV + "ray status", 120, login=False)
    assert st.returncode == 0, st.stderr[-3000:]
    assert "Active:" in st.stdout and "8.0 browser" in st.stdout, st.stdout
    actors = head.run(README_ENV + "ray list actors --detail --limit 1000", 120, login=False)
    assert actors.returncode == 0, actors.stderr[-3000:]
    assert "fleet:supervisor" in actors.stdout
    for out in (st.stdout, st.stderr, actors.stdout, actors.stderr, *(h.boot.stdout for h in hosts)):
        assert token not in out  # nothing prints the token
    # the dashboard's HTTP API: refused without the token, answered with it (header or the cookie a
    # browser gets from POST /api/authenticate, what the dashboard's token dialog does)
    probe = head.python(f"""
import json, httpx
token = open("/home/fleet/.ray/auth_token").read().strip()
url = "{DASHBOARD}/api/v0/actors?limit=1000"
out = {{"none": httpx.get(url, timeout=60).status_code,
        "wrong": httpx.get(url, headers={{"Authorization": "Bearer nope"}}, timeout=60).status_code}}
ok = httpx.get(url, headers={{"Authorization": f"Bearer {{token}}"}}, timeout=60)
out["token"] = ok.status_code
out["names"] = [a.get("name") for a in ok.json()["data"]["result"]["result"]]
auth = httpx.post("{DASHBOARD}/api/authenticate", headers={{"Authorization": f"Bearer {{token}}"}}, timeout=60)
out["authenticate"] = auth.status_code
with httpx.Client(cookies=auth.cookies, timeout=60) as browser:
    out["cookie"] = browser.get(url).status_code
out["mode"] = httpx.get("{DASHBOARD}/api/authentication_mode", timeout=60).json()
print(json.dumps(out))
""", 180, env=None)
    assert (probe["none"], probe["wrong"], probe["token"]) == (401, 403, 200), probe
    assert "fleet:supervisor" in probe["names"]
    assert probe["authenticate"] == 200 and probe["cookie"] == 200
    assert probe["mode"] == {"authentication_mode": "token"}


def test_a_worker_without_the_token_is_told_what_to_copy_and_joins_once_it_has_it(hosts):
    w = hosts.add_host(HostSpec("w9", "bare", resources={"spare": 1}))
    try:
        (w.home / ".ray" / "auth_token").unlink()
        start = f"RAY_HEAD_IP={hosts.head.ip} RAY_gcs_server_port_wait_time_s=3 bash ~/fleet-ray/deploy/fleet-node.sh worker"
        failed = w.run(start, 180)
        assert failed.returncode != 0
        assert "requires a Ray auth token and this host has none" in failed.stderr, failed.stderr[-3000:]
        assert "~/.ray/auth_token" in failed.stderr
        # doing what it says: the head's token copied, the same command joins
        (w.home / ".ray" / "auth_token").write_text((hosts.head.home / ".ray" / "auth_token").read_text())
        joined = w.run(start, 180)
        assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
        assert w.run("echo $RAY_AUTH_MODE").stdout.strip() == "token"
        assert any(n["ip"] == w.ip and n["alive"] for n in hosts.ray_nodes())
    finally:
        hosts.remove_host("w9")


def test_fleet_ray_status_works_on_the_head(hosts):
    done = hosts.head.run("fleet-ray status --json", 120, check=True)
    st = json.loads(done.stdout)
    assert st["store"].startswith(f"redis://127.0.0.1:{REDIS_PORT}/") and not st["store_degraded"]
    assert hosts.head.run("fleet-ray status", 120, check=True).stdout.strip()


def test_a_pool_placed_by_tag_runs_on_the_worker_hosts_and_status_names_each_slots_node(hosts):
    head, workers = hosts.head, hosts.workers
    spec = {"name": "mh", "pools": [{"name": "web", "automation": "builtin.echo", "slots": 5,
                                     "placement": {"resources": {"browser": 1}}}]}
    (head.home / "spec.yaml").write_text(yaml.safe_dump(spec))
    head.run("fleet-ray apply ~/spec.yaml --json", 120, check=True)

    def running():
        st = json.loads(head.run("fleet-ray status --json", 120, check=True).stdout)
        pool = next((p for p in st["pools"] if p["name"] == "web"), None)
        return pool if pool and pool["counts"].get("running") == 5 else None

    pool = wait_for(running, timeout_s=240, interval_s=1)
    by_ip = {n["id"]: n["ip"] for n in hosts.ray_nodes() if n["alive"]}
    on = {}
    for s in pool["slots"]:
        ip = by_ip.get(s["node_id"])
        assert ip in {w.ip for w in workers}, (s, by_ip)  # a worker host, never the head
        on.setdefault(ip, []).append(s)
    assert len(on) == 2  # 5 slots of browser: 1 don't fit one worker's browser: 4
    # status's node is the real one: each slot's pid is a slot process in that host's own PID namespace
    for w in workers:
        for s in on[w.ip]:
            cmd = w.run(f"tr '\\0' ' ' < /proc/{s['pid']}/cmdline", check=True).stdout
            assert cmd.startswith("ray::"), cmd
    (head.home / "empty.yaml").write_text(yaml.safe_dump({"name": "mh", "pools": []}))
    head.run("fleet-ray apply ~/empty.yaml --json", 120, check=True)


def test_a_pool_placed_by_label_runs_only_on_the_host_with_that_label(hosts):
    pools = drive(hosts.head, "apply", {"spec": {"pools": [
        {"name": "us", "automation": "builtin.echo", "slots": 2,
         "placement": {"resources": {"browser": 1}, "labels": {"region": "us"}}},
        {"name": "eu", "automation": "builtin.echo", "slots": 2,
         "placement": {"resources": {"browser": 1}, "labels": {"region": "eu"}}}]}})
    assert {s["ip"] for s in pools["us"]} == {hosts["w2"].ip}  # w2 is region=us
    assert {s["ip"] for s in pools["eu"]} == {hosts["w1"].ip}  # w1 is region=eu
    drive(hosts.head, "apply", {"spec": {"pools": []}})
