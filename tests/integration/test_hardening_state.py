"""State that must not be undone, on real Ray and a real Redis (issue 15, item 1): a supervisor that
restarts while the store is unreachable refuses changes until it has recovered its checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest
import ray

from fleet_ray.actors.launch import start_supervisor
from fleet_ray.client.fleet import FleetClient
from fleet_ray.errors import SupervisorRecovering

from .conftest import _free_port, sigkill


@pytest.fixture
def pausable_redis(tmp_path):
    """A Redis of our own that can be frozen (SIGSTOP: unreachable, data kept) and thawed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server must be installed for this test")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield {"url": f"redis://127.0.0.1:{port}/0", "freeze": lambda: os.kill(proc.pid, signal.SIGSTOP),
           "thaw": lambda: os.kill(proc.pid, signal.SIGCONT)}
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def test_a_change_sent_to_a_supervisor_that_restarted_while_the_store_is_down_is_refused_not_undone(
        cluster, pausable_redis):
    ns = f"t-{uuid.uuid4().hex[:8]}"
    fleet = FleetClient(start_supervisor(pausable_redis["url"], namespace=ns, tick_s=0.05), ns)
    frozen = False
    try:
        fleet.apply({"pools": [{"name": "web", "automation": "builtin.echo", "slots": 1}]})
        fleet.wait_ready(60)
        fleet.wait_until(lambda s: not s.store_degraded, 30)
        time.sleep(0.5)  # the checkpoint with "web" is written
        pausable_redis["freeze"]()
        frozen = True
        pid = ray.get(fleet.supervisor.ping.remote())
        sigkill(pid)  # Ray restarts it; it can't read its checkpoint
        with pytest.raises(SupervisorRecovering) as refused:
            fleet.apply({"pools": [{"name": "new", "automation": "builtin.echo", "slots": 1}]})
        assert refused.value.retry_after_s >= 1
        st = fleet.status()
        assert st.supervisor_pid != pid and not st.recovered and st.pools == []
        pausable_redis["thaw"]()
        frozen = False
        st = fleet.wait_until(lambda s: s.recovered and s.pool("web") is not None
                              and s.pool("web").counts.get("running") == 1, 60)
        assert [p.name for p in st.pools] == ["web"]  # the checkpointed spec: nothing was accepted to undo
        assert fleet.apply({"pools": [{"name": "new", "automation": "builtin.echo", "slots": 1}]})["added"] == ["new"]
    finally:
        if frozen:
            pausable_redis["thaw"]()
        fleet.down(timeout_s=5)
