"""The fleet-ray command line, run as a user runs it (subprocesses against a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, address: str | None = None, ns: str | None = None, check: bool = True,
        stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fleet_ray.cli.main"]
    if address:
        cmd += ["--address", address]
    if ns:
        cmd += ["--namespace", ns]
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, input=stdin,
                         cwd=ROOT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if check and out.returncode != 0:
        raise AssertionError(f"fleet-ray {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def test_demo_runs_on_embedded_defaults():
    out = cli("demo", "--pages", "12", "--slots", "2", "--json", timeout=300)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary == {"pages": 12, "ok": 12, "failed": 0, "titles": 12, "heartbeat_checks": summary["heartbeat_checks"]}
    assert summary["heartbeat_checks"] >= 2
    assert "pool titles  [ok]" in out.stdout and "heartbeat:0" in out.stdout


def test_cli_lifecycle(cluster, tmp_path):
    ns = f"cli-{uuid.uuid4().hex[:6]}"
    addr = cluster.address
    out = cli("up", "--store", f"sqlite://{tmp_path}/s.db", address=addr, ns=ns)
    assert "supervisor up" in out.stdout
    try:
        out = cli("apply", "examples/spec.yaml", address=addr, ns=ns)
        assert "added=['echo', 'ticker']" in out.stdout
        st = None
        for _ in range(300):
            st = json.loads(cli("status", "--json", address=addr, ns=ns).stdout)
            if all(p["counts"].get("running") == p["desired"] for p in st["pools"]):
                break
        assert {p["name"]: p["counts"].get("running") for p in st["pools"]} == {"echo": 3, "ticker": 1}
        table = cli("status", address=addr, ns=ns).stdout
        assert "pool echo  [ok]" in table and "echo:2" in table and "GEN" in table

        res = cli("submit", "echo", "examples/items.jsonl", "--out", str(tmp_path / "r.jsonl"), address=addr, ns=ns)
        assert "3/3 done=3 failed=0" in res.stderr
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert sorted(r["value"]["item"] for r in rows) == ["seen-apple", "seen-banana", "seen-cherry"]

        cli("scale", "echo", "1", address=addr, ns=ns)
        cli("recycle", "ticker:0", address=addr, ns=ns)
        for _ in range(300):
            st = json.loads(cli("status", "--json", address=addr, ns=ns).stdout)
            pools = {p["name"]: p for p in st["pools"]}
            if len(pools["echo"]["slots"]) == 1 and pools["ticker"]["slots"][0]["generation"] == 2 \
                    and pools["ticker"]["slots"][0]["state"] == "running":
                break
        assert len(pools["echo"]["slots"]) == 1 and pools["ticker"]["slots"][0]["generation"] == 2

        out = cli("apply", "examples/layered-spec.yaml", "--env", "prod", "--dry-run", address=addr, ns=ns)
        assert "+ pool echo: builtin.echo, 3 slot(s)" not in out.stdout  # echo exists: a change, not an add
        assert "~ echo.config.tag: 'seen-' -> 'prod-'" in out.stdout and "- pool ticker" in out.stdout
        st = json.loads(cli("status", "--json", address=addr, ns=ns).stdout)
        assert {p["name"] for p in st["pools"]} == {"echo", "ticker"}  # dry run changed nothing

        bad = tmp_path / "bad.yaml"
        bad.write_text("pools:\n  - name: echo\n    automation: builtin.echo\n    slots: many\n")
        out = cli("apply", str(bad), address=addr, ns=ns, check=False)
        assert out.returncode == 2 and "pools.echo.slots" in out.stderr
        out = cli("recycle", "nope:9", address=addr, ns=ns, check=False)
        assert out.returncode == 1 and "no slot 'nope:9'" in out.stderr
    finally:
        out = cli("down", "--timeout", "5", address=addr, ns=ns)
        assert "fleet down" in out.stdout
    out = cli("status", address=addr, ns=ns, check=False)
    assert out.returncode == 3 and "fleet-ray up" in out.stderr


@pytest.mark.parametrize("args", [["scale", "x", "notanumber"], ["nosuchcommand"]])
def test_cli_usage_errors(args):
    out = cli(*args, check=False)
    assert out.returncode == 2 and "usage:" in out.stderr
