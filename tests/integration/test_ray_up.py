"""A real `ray up` of the shipped on-prem cluster definition, on this machine.

The "host" is this machine reached over SSH as a throwaway user (``fleetup``): ``ray up`` runs the
YAML's file mounts (rsync of this repository), setup commands (Debian packages, a venv, ``pip install``
of fleet-ray) and start commands (``deploy/fleet-node.sh head``: Redis with AOF, the Ray head with GCS
fault tolerance, the supervisor and API) exactly as shipped; only the provider's address and the
SSH credentials are the test's. SSH reaches the host without any listening port: OpenSSH's client
runs ``sshd -i`` (inetd mode) as its ProxyCommand. The host's tags come from its node.env, as an
operator's would. A dedicated user keeps ``ray stop`` (in the start commands and in ``ray down``) from
touching anything else on the machine, and lets the test check that nothing of the cluster survives
``ray down``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from .conftest import _free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
USER = "fleetup"
SSHD = "/usr/sbin/sshd"
SUDOERS = Path("/etc/sudoers.d/fleet-ray-test-fleetup")
MARK = "--fleet-json--"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def sh(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{args!r} exited {out.returncode}\nstdout:\n{out.stdout[-6000:]}\n"
                             f"stderr:\n{out.stderr[-6000:]}")
    return out


def user_processes(uid: int) -> list[str]:
    found = []
    for p in psutil.process_iter(["uids", "cmdline", "name"]):
        try:
            if p.info["uids"] and p.info["uids"].real == uid:
                found.append(" ".join(p.info["cmdline"] or [p.info["name"]])[:160])
        except psutil.Error:
            continue
    return found


def kill_user(uid: int) -> None:
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == uid:
                p.kill()
        except psutil.Error:
            continue


@pytest.fixture()
def host(tmp_path):
    """A throwaway user reachable by key over `sshd -i`, with passwordless sudo like a cloud image's."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user and runs sshd in inetd mode")
    for tool in (SSHD, shutil.which("rsync"), shutil.which("sudo"), shutil.which("ssh-keygen")):
        assert tool and Path(tool).exists(), "install openssh-server, rsync and sudo (.ci/run does)"
    if sh("id", USER, check=False).returncode != 0:
        sh("useradd", "--create-home", "--shell", "/bin/bash", USER)
    sh("usermod", "-p", "*", USER)  # no password, but not locked (sshd refuses locked accounts' keys)
    pw = pwd.getpwnam(USER)
    home = Path(pw.pw_dir)
    kill_user(pw.pw_uid)  # leftovers of an interrupted earlier run
    SUDOERS.write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
    SUDOERS.chmod(0o440)

    key = tmp_path / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    hostkey = tmp_path / "ssh_host_ed25519_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    sshd_config = tmp_path / "sshd_config"
    sshd_config.write_text(
        f"HostKey {hostkey}\nPidFile none\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n"
        f"AuthorizedKeysFile .ssh/authorized_keys\nAllowUsers {USER}\n"
    )

    ports = {"redis": _free_port(), "ray": _free_port(), "api": _free_port()}
    env_dir = home / ".fleet-ray"
    env_dir.mkdir(exist_ok=True)
    (env_dir / "node.env").write_text(
        "FLEET_RESOURCES='{\"browser\": 4}'\nFLEET_LABELS='region=eu'\n"
        f"FLEET_REDIS_PORT={ports['redis']}\nFLEET_RAY_PORT={ports['ray']}\nFLEET_API_PORT={ports['api']}\n"
        f"RAY_TMPDIR={home}/.ray-tmp\nFLEET_NAMESPACE=onprem\n"
    )
    (home / ".ray-tmp").mkdir(exist_ok=True)
    sh("chown", "-R", f"{USER}:{USER}", str(ssh_dir), str(env_dir), str(home / ".ray-tmp"))
    yield {"uid": pw.pw_uid, "home": home, "key": key, "sshd_config": sshd_config, "ports": ports}
    kill_user(pw.pw_uid)
    SUDOERS.unlink(missing_ok=True)
    (ssh_dir / "authorized_keys").unlink(missing_ok=True)  # the user keeps its venv, not a way in


def cluster_config(host, tmp_path) -> Path:
    """The shipped cluster-onprem.yaml with this machine as its head and the test's SSH credentials."""
    cfg = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    cfg["cluster_name"] = f"fleet-up-{uuid.uuid4().hex[:6]}"
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["auth"] = {
        "ssh_user": USER,
        "ssh_private_key": str(host["key"]),
        "ssh_proxy_command": f"{SSHD} -i -f {host['sshd_config']}",
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ray_cli(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).with_name("ray"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "PIP_"))}
    return sh(ray, *args, timeout=timeout, check=check, cwd=ROOT, env=env)


def remote_json(cfg: Path, command: str):
    """Run a command on the head with `ray exec` and decode the JSON document it prints (after a marker
    line, so log lines before it can't be mistaken for it)."""
    out = ray_cli("exec", str(cfg), f"echo {MARK}; {command}", timeout=120)
    head, sep, tail = out.stdout.partition(MARK)
    assert sep, f"no output from {command!r}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    text = tail[tail.index("{"):] if "{" in tail else tail
    return json.JSONDecoder().raw_decode(text)[0]


def test_ray_up_runs_the_shipped_setup_and_start_commands_and_ray_down_leaves_nothing(host, tmp_path):
    cfg = cluster_config(host, tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "onprem", "pools": [
        {"name": "eu", "automation": "builtin.echo", "slots": 2,
         "placement": {"num_cpus": 0, "resources": {"browser": 1}, "labels": {"region": "eu"}}},
        {"name": "gpu", "automation": "builtin.echo", "slots": 1,
         "placement": {"num_cpus": 0, "resources": {"gpu_box": 1}}},
    ]}))
    spec.chmod(0o644)
    try:
        ray_cli("up", "-y", "--no-config-cache", str(cfg), timeout=1500)
        # the start commands ran: a Ray head with the host's tags, the fleet's own Redis, the API
        procs = user_processes(host["uid"])
        assert any("gcs_server" in p for p in procs) and any("raylet" in p for p in procs), procs
        assert any(f"redis-server 127.0.0.1:{host['ports']['redis']}" in p for p in procs), procs
        ray_cli("rsync-up", str(cfg), str(spec), "~/spec.yaml")
        applied = remote_json(cfg, "fleet-ray apply ~/spec.yaml --json")
        assert applied, applied
        def placed():
            st = remote_json(cfg, "fleet-ray status --json")
            pools = {p["name"]: p for p in st["pools"]}
            eu, gpu = pools.get("eu"), pools.get("gpu")
            return (st, eu, gpu) if eu and gpu and eu["counts"].get("running") == 2 and gpu["state"] == "pending" \
                else None

        st, eu, gpu = wait_for(placed, timeout_s=180, interval_s=2)
        # slots went where the host's tags allow; the untaggable pool says why it waits
        assert "no node has resource 'gpu_box'" in gpu["reason"]
        assert all(s["pid"] and s["node_id"] for s in eu["slots"])
        assert st["store"].startswith("redis://127.0.0.1:") and not st["store_degraded"]
        # the fleet's state is in the head's Redis (AOF on disk under ~/fleet-redis)
        assert (host["home"] / "fleet-redis" / "appendonlydir").is_dir()
    finally:
        ray_cli("down", "-y", str(cfg), timeout=300, check=False)
    deadline = time.monotonic() + 30
    while (left := user_processes(host["uid"])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"left behind after ray down: {left}"
