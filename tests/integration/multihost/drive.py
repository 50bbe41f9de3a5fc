"""Running :mod:`head_driver` commands on a namespace host, from the tests and ``bench.multihost``."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

from .hosts import Host, HostError, parse_json_output

DRIVER = "~/fleet-ray/tests/integration/multihost/head_driver.py"


def driver_cmd(command: str, args: dict[str, Any] | None = None) -> str:
    return f"python {DRIVER} {command} {shlex.quote(json.dumps(args or {}))}"


def drive(host: Host, command: str, args: dict[str, Any] | None = None, timeout: float = 300) -> Any:
    """Run ``head_driver.py <command>`` on ``host`` and return the JSON it printed."""
    done = host.run(driver_cmd(command, args), timeout)
    if done.returncode != 0:
        raise HostError(f"{host.tag}: {command} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
                        f"--- stderr\n{done.stderr[-6000:]}")
    return parse_json_output(done.stdout, f"{host.tag}: {command}")


def start_driver(host: Host, command: str, args: dict[str, Any] | None = None, log_name: str | None = None
                 ) -> subprocess.Popen:
    """``head_driver.py <command>`` in the background on ``host``; its output goes to ``~/<log_name>``
    (read it from ``host.home / log_name``) when given."""
    redirect = f" > ~/{log_name} 2>&1" if log_name else ""
    return host.spawn(driver_cmd(command, args) + redirect)


def driver_result(host: Host, log_name: str) -> Any:
    return parse_json_output((host.home / log_name).read_text(), f"{host.tag}: ~/{log_name}")
