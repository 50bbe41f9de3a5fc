"""Real separate hosts on one machine: Linux namespaces running the shipped ``deploy/fleet-node.sh``.

Every host is another machine (DESIGN.md, habit 13). A :class:`HostCluster` builds, for each
:class:`HostSpec`:

- **network**: its own network namespace (own loopback) with a veth (``eth0``, a fixed MAC derived
  from its address) to a bridge in a separate "switch" namespace; its address is
  ``10.<r>.<r>.<10+i>/24`` with a default route via the bridge (``.1``), so Ray's node-IP detection
  finds the cluster address. Nothing of it is in the machine's own network namespace, and nothing on
  one host can reach another's 127.0.0.1;
- **filesystem**: its own mount namespace with private tmpfs ``/tmp`` and ``/dev/shm``, a tmpfs
  ``/home`` with ``/home/fleet`` (``$HOME``) bound from a per-host directory on disk (``Host.home``,
  so the test reads what the host wrote). The repository stays visible at its absolute path (the
  editable install points there, even when the checkout itself lives under /tmp or /home) and is
  bound read-only at ``~/fleet-ray``;
- **processes**: its own PID namespace whose PID 1 is ``hostinit.py``, a tiny init that reaps
  orphans. ``fleet-node.sh``'s ``ray stop`` and ``pkill`` see only this host; killing PID 1
  (:meth:`Host.power_off`) kills every process of the host at once;
- **what ``ray up`` leaves**: ``~/fleet`` (FLEET_VENV; a link to this Python's installation, where
  python, ray, fleet-ray, serve live), ``~/.bashrc`` sourcing ``fleet-env.sh`` (the YAMLs' setup
  command), ``~/ray_bootstrap_config.yaml`` on the head (the shipped ``cluster-onprem.yaml`` with this
  cluster's addresses, prepared the way ``ray up`` prepares it), ``~/.fleet-ray/node.env`` per host,
  and one Ray auth token at ``~/.ray/auth_token`` on every host (what a file mount copies);

then runs ``bash ~/fleet-ray/deploy/fleet-node.sh head`` on the head and
``RAY_HEAD_IP=<head ip> bash ~/fleet-ray/deploy/fleet-node.sh worker`` on each worker, unchanged.
Workers start in parallel with the head: each waits until the head's GCS port accepts connections,
then joins while the head goes on with ``fleet-ray up``.

Ray's node-death detection is what ``fleet-node.sh head`` ships (health checks every second, 2 s
timeout, dead after 5 misses: a killed host is declared dead in ~6 s, a silent one in ~15 s); node.env
here sets nothing of it, so the tests exercise the shipped defaults.

Not pytest-specific: ``bench/multihost.py`` imports this module too. Tear-down (:meth:`HostCluster.close`)
kills every host, deletes every namespace (each veth goes with its namespace), and then checks that
no process is left in any of them; a cluster that fails to start is torn down before the error is
raised. Namespaces of an earlier run whose process is gone (``fleet-mh-<pid>-…``) are removed at the
next start. One namespace cluster at a time per machine is the intended use (each costs ~3 Ray nodes).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
INIT = Path(__file__).resolve().with_name("hostinit.py")
PREFIX = "fleet-mh"
MARK = "--fleet-json--"  # python(): the JSON after the last such marker (else the last JSON line)
HOME = "/home/fleet"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RAY_PORT, REDIS_PORT, API_PORT = 6380, 6390, 8470  # fleet-node.sh's defaults (each host has its own ports)


class HostError(RuntimeError):
    """A host command failed, or a host did not start."""


class HostsUnavailable(RuntimeError):
    """This machine can't build namespace hosts (the reason says why)."""


class HostsLeftBehind(RuntimeError):
    """Tear-down found processes or namespaces of the cluster still alive."""


@dataclass
class HostSpec:
    """One host of a :class:`HostCluster`.

    ``role``: ``"head"`` (``fleet-node.sh head``), ``"worker"`` (``fleet-node.sh worker``) or
    ``"bare"`` (namespaces and provisioning only, nothing started). ``resources`` and ``labels`` go to
    node.env as FLEET_RESOURCES / FLEET_LABELS; ``env`` adds (or overrides) node.env settings.
    """

    tag: str
    role: str = "worker"
    resources: dict[str, float] | None = None
    labels: dict[str, str] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.tag):
            raise ValueError(f"host tag {self.tag!r}: lowercase letters and digits, at most 10")
        if self.role not in ("head", "worker", "bare"):
            raise ValueError(f"host role {self.role!r}: head, worker or bare")


def default_specs(workers: int = 2, browser: int = 4) -> list[HostSpec]:
    """head (no tags) and ``workers`` hosts w1, w2, … with ``{"browser": browser}`` and a region label
    (w1 ``eu``, w2 ``us``, then ``eu``/``us`` alternating)."""
    return [HostSpec("head", "head")] + [
        HostSpec(f"w{i}", "worker", resources={"browser": browser}, labels={"region": "eu" if i % 2 else "us"})
        for i in range(1, workers + 1)
    ]


def namespaces_unavailable() -> str | None:
    """Why namespace hosts can't be built here (None when they can): needs root, ``ip netns``,
    ``unshare``/``nsenter`` and permission to create network, mount and PID namespaces."""
    if sys.platform != "linux":
        return "namespace hosts need Linux"
    if os.geteuid() != 0:
        return "namespace hosts need root (ip netns add, mount and PID namespaces)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"namespace hosts need {tool!r} (iproute2 / util-linux)"
    probe = f"{PREFIX}-probe{os.getpid()}"
    try:
        out = _sh("ip", "netns", "add", probe, check=False)
        if out.returncode != 0:
            return f"`ip netns add` is not permitted here: {out.stderr.strip()[:200]}"
        out = _sh("ip", "netns", "exec", probe, "unshare", "--mount", "--pid", "--fork", "--propagation",
                  "private", "true", check=False)
        if out.returncode != 0:
            return f"unshare --mount --pid is not permitted here: {out.stderr.strip()[:200]}"
    finally:
        _sh("ip", "netns", "del", probe, check=False)
    return None


def _sh(*args: str, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and out.returncode != 0:
        raise HostError(f"{' '.join(args)} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    return out


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _processes_in(net: set[int], pid: set[int]) -> list[tuple[int, str]]:
    """Processes (real pid, command line) whose network or PID namespace is one of the given inodes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        p = int(entry)
        if p == os.getpid():
            continue
        ino_net, ino_pid = _ns_inode(f"/proc/{p}/ns/net"), _ns_inode(f"/proc/{p}/ns/pid")
        if (ino_net is not None and ino_net in net) or (ino_pid is not None and ino_pid in pid):
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            found.append((p, cmd.strip()[:200]))
    return found


def _kill_all(procs: Iterable[tuple[int, str]]) -> None:
    for p, _ in procs:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Remove the namespaces (and kill their processes) of earlier clusters whose owning process is gone,
    e.g. a test run that was SIGKILLed. Clusters of live processes are left alone."""
    removed = []
    out = _sh("ip", "netns", "list", check=False)
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}-(\d+)-[0-9a-f]+-[a-z0-9]+", name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        ino = _ns_inode(f"/run/netns/{name}")
        if ino is not None:
            left = _processes_in({ino}, set())
            _kill_all(left)
        _sh("ip", "netns", "del", name, check=False)
        removed.append(name)
    return removed


def _python_home() -> Path:
    """The installation whose bin/ holds this interpreter's python, ray, fleet-ray (a venv's root, or the
    pyenv/system prefix): ~/fleet links here."""
    return Path(sys.prefix)


class Host:
    """One namespace host. Create through :class:`HostCluster`.

    Attributes: ``tag`` (``head``, ``w1`` …), ``role``, ``spec``, ``ip`` (its cluster address),
    ``home`` (its ``$HOME`` on the real filesystem), ``netns`` (its network namespace's name),
    ``node_env`` (what its ``~/.fleet-ray/node.env`` says), ``pid1`` (real pid of its PID 1, None while
    off), ``boot`` (the CompletedProcess of its last ``fleet-node.sh`` run, None for bare hosts).
    """

    def __init__(self, cluster: HostCluster, spec: HostSpec, index: int):
        self.cluster = cluster
        self.spec = spec
        self.tag = spec.tag
        self.role = spec.role
        self.index = index
        self.ip = f"{cluster.subnet}.{10 + index}"
        self.mac = "02:fe:" + ":".join(f"{int(o):02x}" for o in self.ip.split("."))
        self.netns = f"{cluster.name}-{spec.tag}"
        self.veth = spec.tag  # the switch-side end, inside the switch namespace
        self.dir = cluster.base_dir / spec.tag
        self.home = self.dir / "home"
        self.node_env: dict[str, str] = {}
        self.pid1: int | None = None
        self.boot: subprocess.CompletedProcess | None = None
        self._unshare: subprocess.Popen | None = None
        self._inodes: tuple[int | None, int | None] = (None, None)  # (net, pid) of the current incarnation
        self._all_inodes: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"Host({self.tag!r}, {self.role}, {self.ip}, {'on' if self.alive else 'off'})"

    # -- state -------------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._unshare is not None and self._unshare.poll() is None

    def pids(self) -> list[int]:
        """Real (machine-wide) pids of every process of this host."""
        net, pid = self._inodes
        return [p for p, _ in _processes_in({net} if net else set(), {pid} if pid else set())]

    # -- commands ----------------------------------------------------------------------------------------
    def _argv(self, cmd: str, login: bool) -> list[str]:
        if self.pid1 is None or not self.alive:
            raise HostError(f"host {self.tag} is off")
        script = 'cd "$HOME" || exit 97\n'
        if login:
            script += '. "$HOME/fleet-ray/deploy/fleet-env.sh"\n'
        return ["nsenter", f"--target={self.pid1}", "--net", "--mount", "--pid", f"--wdns={HOME}", "--",
                "/bin/bash", "-c", script + cmd]

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        base = {"HOME": HOME, "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash", "PATH": BASE_PATH,
                "LANG": "C.UTF-8", "TERM": "dumb"}
        return {**base, **(env or {})}

    def run(self, cmd: str, timeout: float = 120, *, check: bool = False, env: dict[str, str] | None = None,
            input: str | None = None, login: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` with bash inside all of this host's namespaces, in ``$HOME`` (/home/fleet), with a
        clean environment (HOME, USER, PATH, LANG + ``env``) and, with ``login`` (default), after
        ``. ~/fleet-ray/deploy/fleet-env.sh`` as a login shell on a fleet host has it (node.env
        exported, ~/fleet/bin on PATH, RAY_AUTH_MODE when a token exists). Returns the CompletedProcess
        (text); ``check`` raises :class:`HostError` with the output's tail on a non-zero exit. On
        ``timeout`` every process of the command's process group is killed and
        ``subprocess.TimeoutExpired`` raised (what it daemonized survives, as on a real host)."""
        argv = self._argv(cmd, login)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._env(env),
                             cwd="/", start_new_session=True)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(p.pid)
            try:
                out, err = p.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # something it daemonized holds the pipes: stop reading
                out, err = "", ""
                p.kill()
            raise subprocess.TimeoutExpired(argv[-1], timeout, out, err) from None
        done = subprocess.CompletedProcess(argv[-1], p.returncode, out, err)
        if check and done.returncode != 0:
            raise HostError(f"{self.tag}: {cmd!r} exited {done.returncode}\n--- stdout\n{out[-4000:]}\n"
                            f"--- stderr\n{err[-4000:]}")
        return done

    def spawn(self, cmd: str, *, env: dict[str, str] | None = None, login: bool = True,
              stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.STDOUT) -> subprocess.Popen:
        """Start ``cmd`` on this host in the background (same environment as :meth:`run`); returns the
        Popen of the ``nsenter`` in front of it. ``kill_spawned(popen)`` ends its process group."""
        return subprocess.Popen(self._argv(cmd, login), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                text=True, env=self._env(env), cwd="/", start_new_session=True)

    def python(self, code: str, timeout: float = 120, *, env: dict[str, str] | None = None) -> Any:
        """Run Python ``code`` on this host (``python -``, the login environment) and return the JSON it
        printed: what follows the last ``--fleet-json--`` marker if there is one, else the last stdout
        line that parses as JSON. Raises :class:`HostError` on a non-zero exit or no JSON."""
        done = self.run("python -", timeout, input=code, env=env)
        if done.returncode != 0:
            raise HostError(f"{self.tag}: python exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
                            f"--- stderr\n{done.stderr[-5000:]}")
        return parse_json_output(done.stdout, f"{self.tag}: python")

    # -- faults ------------------------------------------------------------------------------------------
    def link_down(self) -> None:
        """Pull this host's cable: its veth's switch end goes down. Packets are dropped silently both
        ways (connections hang, nothing is reset); processes keep running."""
        _sh("ip", "-n", self.cluster.switch, "link", "set", "dev", self.veth, "down")

    def link_up(self) -> None:
        _sh("ip", "-n", self.cluster.switch, "link", "set", "dev", self.veth, "up")

    def reset_connections(self, peers: Iterable[Host] | None = None) -> int:
        """Reset every TCP connection between this host and the other hosts (or only ``peers``) while
        every process stays alive: ``ss -K`` in this host's network namespace aborts each such socket,
        which sends the peer a RST, so both ends see the connection reset and reconnect. Listening
        sockets and loopback connections are untouched. Returns how many sockets were killed. Needs a
        kernel with CONFIG_INET_DIAG_DESTROY (ss -K silently kills nothing without it: 0)."""
        targets = [f"{self.cluster.subnet}.0/24"] if peers is None else [h.ip for h in peers]
        killed = 0
        for dst in targets:
            out = _sh("nsenter", f"--net=/run/netns/{self.netns}", "ss", "-K", "-t", "-n", "-H", f"dst {dst}")
            killed += len([ln for ln in out.stdout.splitlines() if ln.strip()])
        return killed

    def power_off(self, *, cut_link: bool = False, timeout: float = 20) -> None:
        """Kill this host's PID 1: every process of the host dies at once (host loss). The network
        namespace stays, so the host's kernel still answers (a connection attempt to it is refused,
        open connections are reset); with ``cut_link`` its link is taken down first, so the host
        vanishes from the network like a powered-off machine (call :meth:`link_up` later or
        :meth:`restart`). Returns once no process of the host is left."""
        if cut_link:
            self.link_down()
        self._kill(timeout)

    def restart(self, timeout: float = 300) -> None:
        """A fresh boot of this host: its old namespaces go (processes, tmpfs /tmp and /dev/shm), new
        ones come with the same address and MAC and the same disk (``home``), link up, and
        ``fleet-node.sh`` runs again (``worker`` for a worker: it joins the running head). Returns when
        the start command exited; raises :class:`HostError` if it failed. Restarting the head runs
        ``fleet-node.sh head`` again: a new Ray cluster (it drops the GCS tables), which running
        workers don't rejoin by themselves; restart them too."""
        self._teardown()
        self._create()
        self._start_init()
        if self.role != "bare":
            self._boot(timeout)

    # -- building ----------------------------------------------------------------------------------------
    def _provision(self) -> None:
        """What `ray up` (file mounts + setup commands) leaves on the host, on its disk."""
        c = self.cluster
        (self.home / "fleet-ray").mkdir(parents=True, exist_ok=True)  # mount point of the repository
        venv = self.home / "fleet"
        if not venv.is_symlink():
            venv.symlink_to(_python_home())
        (self.home / ".bashrc").write_text(". ~/fleet-ray/deploy/fleet-env.sh\n")
        (self.home / ".profile").write_text('[ -f ~/.bashrc ] && . ~/.bashrc\n')
        ray_dir = self.home / ".ray"
        ray_dir.mkdir(mode=0o700, exist_ok=True)
        if c.token is not None:
            token = ray_dir / "auth_token"
            token.write_text(c.token)
            token.chmod(0o600)
        env: dict[str, str] = {"FLEET_RAY_PORT": str(RAY_PORT), "FLEET_REDIS_PORT": str(REDIS_PORT),
                               "FLEET_API_PORT": str(API_PORT)}
        if self.spec.resources:
            env["FLEET_RESOURCES"] = json.dumps(self.spec.resources)
        if self.spec.labels:
            env["FLEET_LABELS"] = ",".join(f"{k}={v}" for k, v in self.spec.labels.items())
        env.update(self.spec.env)
        self.node_env = env
        (self.home / ".fleet-ray").mkdir(exist_ok=True)
        (self.home / ".fleet-ray" / "node.env").write_text(
            "# written by tests/integration/multihost/hosts.py, as an operator would\n"
            + "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        if self.role == "head":
            (self.home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(c.bootstrap_config()))

    def _create(self) -> None:
        """Network namespace, veth to the switch, address, default route."""
        c = self.cluster
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "-n", c.switch, "link", "add", "name", self.veth, "type", "veth", "peer", "name", "eth0",
            "netns", self.netns)
        _sh("ip", "-n", c.switch, "link", "set", "dev", self.veth, "master", "br0", "up")
        _sh("ip", "-n", self.netns, "-batch", "-", input="\n".join([
            "link set lo up",
            f"link set eth0 address {self.mac}",
            f"addr add {self.ip}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {c.bridge_ip}",
        ]) + "\n")
        self._all_inodes.add(("net", _ns_inode(f"/run/netns/{self.netns}") or 0))

    def _start_init(self, timeout: float = 30) -> None:
        c = self.cluster
        cfg = self.dir / "init.json"
        cfg.write_text(json.dumps({"home": str(self.home), "repo": str(c.repo), "keep": c.keep_paths(),
                                   "cover": [d for d in ("/etc/fleet-ray",) if os.path.isdir(d)]}))
        log = open(self.dir / "init.log", "ab")  # noqa: SIM115 - the init keeps it for its life
        main_thread = threading.current_thread() is threading.main_thread()
        self._unshare = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "--", "unshare", "--mount", "--pid", "--fork",
             "--kill-child", "--propagation", "private", "--", sys.executable, "-I", "-S", str(INIT), str(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd="/",
            # the host dies with the process that built it (a killed test run leaves no host running);
            # only from the main thread: the signal fires when the *thread* that forked exits
            preexec_fn=_die_with_parent if main_thread else None,
        )
        log.close()
        line = _readline(self._unshare.stdout, timeout)
        if line.strip() != b"ready":
            err = (self.dir / "init.log").read_text(errors="replace")[-2000:]
            self._kill(5)
            raise HostError(f"host {self.tag}: init did not start ({line!r}): {err}")
        self._unshare.stdout.close()
        self.pid1 = _child_of(self._unshare.pid, timeout)
        self._inodes = (_ns_inode(f"/run/netns/{self.netns}"), _ns_inode(f"/proc/{self.pid1}/ns/pid"))
        self._all_inodes.add(("pid", self._inodes[1] or 0))

    def _boot_cmd(self) -> str:
        if self.role == "head":
            return "bash ~/fleet-ray/deploy/fleet-node.sh head"
        head = self.cluster.head
        if head is None:
            return "bash ~/fleet-ray/deploy/fleet-node.sh worker"  # no head: fails as on a real host
        # start in parallel with the head: wait until its GCS port takes connections, then join
        return (f"for _ in $(seq 1 1500); do (: </dev/tcp/{head.ip}/{RAY_PORT}) 2>/dev/null && break; "
                f"sleep 0.2; done\nRAY_HEAD_IP={head.ip} bash ~/fleet-ray/deploy/fleet-node.sh worker")

    def _boot_start(self) -> subprocess.Popen:
        return self.spawn(self._boot_cmd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def _boot_finish(self, p: subprocess.Popen, deadline: float) -> None:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _killpg(p.pid)
            out, _ = p.communicate()
            self.boot = subprocess.CompletedProcess(self._boot_cmd(), -9, out, "")
            (self.dir / "boot.log").write_text(out or "")
            raise HostError(f"host {self.tag}: fleet-node.sh {self.role} did not finish in time\n{out[-4000:]}") from None
        self.boot = subprocess.CompletedProcess(self._boot_cmd(), p.returncode, out, "")
        (self.dir / "boot.log").write_text(out or "")
        if p.returncode != 0:
            raise HostError(f"host {self.tag}: fleet-node.sh {self.role} exited {p.returncode}\n{out[-4000:]}")

    def _boot(self, timeout: float) -> None:
        self._boot_finish(self._boot_start(), time.monotonic() + timeout)

    # -- tearing down ------------------------------------------------------------------------------------
    def _kill(self, timeout: float) -> None:
        if self.pid1 is not None:
            try:
                os.kill(self.pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._unshare is not None:
            try:
                self._unshare.kill()
            except ProcessLookupError:
                pass
            try:
                self._unshare.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # processes that entered only the network namespace (ss, an ip netns exec) die too
        deadline = time.monotonic() + timeout
        while (left := self.pids()) and time.monotonic() < deadline:
            _kill_all((p, "") for p in left)
            time.sleep(0.05)
        self.pid1 = None

    def _teardown(self) -> None:
        self._kill(20)
        _sh("ip", "-n", self.cluster.switch, "link", "del", "dev", self.veth, check=False)
        _sh("ip", "netns", "del", self.netns, check=False)
        self._inodes = (None, None)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _readline(stream, timeout: float) -> bytes:
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else b""


def _child_of(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise HostError(f"unshare (pid {pid}) has no child")


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_spawned(p: subprocess.Popen) -> None:
    """End a :meth:`Host.spawn` command: SIGKILL to its process group (inside the host too)."""
    _killpg(p.pid)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass


def parse_json_output(stdout: str, what: str = "output") -> Any:
    if MARK in stdout:
        tail = stdout.rsplit(MARK, 1)[1].lstrip()
        return json.JSONDecoder().raw_decode(tail)[0]
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line[:1] in ("{", "[", '"') or line in ("null", "true", "false") or re.fullmatch(r"-?\d+(\.\d+)?", line):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise HostError(f"{what} printed no JSON:\n{stdout[-3000:]}")


class HostCluster:
    """Hosts built from namespaces, connected by one switch. ``HostCluster(specs).start()`` (or ``with
    HostCluster(specs) as c:``) builds and boots them; :meth:`close` tears everything down.

    ``specs`` defaults to :func:`default_specs` (head, w1, w2). ``base_dir``: where the hosts' disks
    live (a temporary directory, removed at close, by default). ``token``: the Ray auth token put at
    ``~/.ray/auth_token`` on every host (``True``: a fresh one; a string: that one; ``False``: none
    anywhere, so ``fleet-node.sh head`` generates the head's own and the workers have none).

    Attributes: ``hosts`` (tag → :class:`Host`, in spec order), ``head`` (None without a head),
    ``workers``, ``subnet`` (``10.a.b``), ``bridge_ip``, ``name`` (namespace name prefix), ``timings``
    (``start_s``, ``close_s``, per-host ``boot_s``).
    """

    def __init__(self, specs: Sequence[HostSpec] | None = None, *, base_dir: str | Path | None = None,
                 token: str | bool = True, repo: str | Path = REPO):
        specs = list(specs) if specs is not None else default_specs()
        tags = [s.tag for s in specs]
        if len(set(tags)) != len(tags):
            raise ValueError(f"host tags must be unique: {tags}")
        if sum(s.role == "head" for s in specs) > 1:
            raise ValueError("at most one head")
        if len(specs) > 200:
            raise ValueError("at most 200 hosts")
        self.repo = Path(repo).resolve()
        self.name = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}"
        self.switch = f"{self.name}-sw"
        r = secrets.SystemRandom()
        self.subnet = f"10.{r.randint(64, 250)}.{r.randint(1, 250)}"
        self.bridge_ip = f"{self.subnet}.1"
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="fleet-hosts-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.token: str | None = secrets.token_hex(32) if token is True else (token or None)  # False: none
        self.hosts: dict[str, Host] = {s.tag: Host(self, s, i) for i, s in enumerate(specs)}
        self.head: Host | None = next((h for h in self.hosts.values() if h.role == "head"), None)
        self.workers: list[Host] = [h for h in self.hosts.values() if h.role == "worker"]
        self.timings: dict[str, Any] = {}
        self._switch_inode: int | None = None
        self._removed: list[Host] = []
        self._started = False
        self._closed = False

    def __getitem__(self, tag: str) -> Host:
        return self.hosts[tag]

    def __iter__(self):
        return iter(self.hosts.values())

    def __enter__(self) -> HostCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def keep_paths(self) -> list[str]:
        """Paths that must stay visible inside every host at their own absolute path: the repository
        (editable install) and this Python's installation (a venv, pyenv, or the system's)."""
        paths = {str(self.repo), sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent)}
        return sorted(p for p in paths if p and os.path.isdir(p))

    def bootstrap_config(self) -> dict[str, Any]:
        """The head's ~/ray_bootstrap_config.yaml: the shipped cluster-onprem.yaml with this cluster's
        addresses, prepared as `ray up` writes it for the head's autoscaler (defaults filled in, the SSH
        key at ~/ray_bootstrap_key.pem, file mounts at their remote paths)."""
        from ray.autoscaler._private.util import prepare_config

        cfg = yaml.safe_load((self.repo / "cluster-onprem.yaml").read_text())
        cfg["cluster_name"] = self.name
        # no worker_ips: the workers here join by themselves (fleet-node.sh worker), so the head's
        # autoscaler has nothing to launch over SSH (these hosts run no sshd)
        cfg["provider"].update(head_ip=self.head.ip if self.head else self.bridge_ip, worker_ips=[])
        cfg["auth"] = {"ssh_user": "root", "ssh_private_key": "~/ray_bootstrap_key.pem"}
        cfg = prepare_config(cfg)
        cfg.pop("head_node", None)
        cfg["file_mounts"] = {remote: remote for remote in cfg.get("file_mounts", {})}
        cfg["no_restart"] = False
        return json.loads(json.dumps(cfg))

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 420) -> HostCluster:
        """Build every host and run its start command (workers in parallel with the head). On any failure
        everything built so far is torn down before the error is raised."""
        if self._started:
            return self
        self._started = True
        reason = namespaces_unavailable()
        if reason:
            raise HostsUnavailable(reason)
        t0 = time.monotonic()
        try:
            remove_stale_namespaces()
            self._create_switch()
            for h in self.hosts.values():
                h.dir.mkdir(parents=True, exist_ok=True)
                h._provision()
                h._create()
                h._start_init()
            self.timings["namespaces_s"] = round(time.monotonic() - t0, 2)
            deadline = time.monotonic() + timeout
            booting = {h.tag: (h, h._boot_start(), time.monotonic()) for h in self.hosts.values() if h.role != "bare"}
            while booting:  # the first host that fails stops the start (and everything is torn down)
                for tag, (h, p, t) in list(booting.items()):
                    if p.poll() is not None or time.monotonic() > deadline:
                        del booting[tag]
                        h._boot_finish(p, deadline)
                        self.timings.setdefault("boot_s", {})[tag] = round(time.monotonic() - t, 2)
                time.sleep(0.1)
        except BaseException as exc:
            try:
                self.close()
            except HostsLeftBehind as left:
                raise HostError(f"start failed ({exc}), and tear-down left something behind: {left}") from exc
            raise
        self.timings["start_s"] = round(time.monotonic() - t0, 2)
        return self

    def add_host(self, spec: HostSpec, *, boot: bool = True, timeout: float = 300) -> Host:
        """Another host on the running cluster (a new machine plugged into the switch), provisioned like
        the others; with ``boot`` (and a role other than bare) its start command runs before this
        returns. Raises :class:`HostError` if it fails (the host stays, for a look at it)."""
        if spec.tag in self.hosts:
            raise ValueError(f"host {spec.tag!r} exists")
        if spec.role == "head":
            raise ValueError("a running cluster has its head")
        h = Host(self, spec, max((x.index for x in self.hosts.values()), default=-1) + 1)
        self.hosts[spec.tag] = h
        if h.role == "worker":
            self.workers.append(h)
        h.dir.mkdir(parents=True, exist_ok=True)
        h._provision()
        h._create()
        h._start_init()
        if boot and h.role != "bare":
            h._boot(timeout)
        return h

    def remove_host(self, tag: str) -> None:
        """Unplug and scrap a host: every process killed, its namespaces deleted (its disk stays)."""
        h = self.hosts.pop(tag)
        if h in self.workers:
            self.workers.remove(h)
        h._teardown()
        self._removed.append(h)

    def _create_switch(self) -> None:
        _sh("ip", "netns", "add", self.switch)
        self._switch_inode = _ns_inode(f"/run/netns/{self.switch}")
        _sh("ip", "-n", self.switch, "-batch", "-", input="\n".join([
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {self.bridge_ip}/24 dev br0",
            "link set br0 up",
        ]) + "\n")

    def close(self) -> None:
        """Kill every host, delete every namespace (veths go with them), then check that nothing of the
        cluster is left: raises :class:`HostsLeftBehind` naming what survived. Idempotent."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        for h in self.hosts.values():  # SIGKILL every PID 1 first: the hosts die together
            if h.pid1 is not None:
                try:
                    os.kill(h.pid1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for h in self.hosts.values():
            h._teardown()
        _sh("ip", "netns", "del", self.switch, check=False)
        problems = self.leftovers()
        self.timings["close_s"] = round(time.monotonic() - t0, 2)
        if self._own_dir and not problems:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if problems:
            raise HostsLeftBehind("; ".join(problems))

    def leftovers(self) -> list[str]:
        """What of this cluster still exists: processes in any of its namespaces (every incarnation),
        named namespaces, links."""
        problems = []
        net = {ino for kind, ino in self._all_() if kind == "net" and ino}
        pid = {ino for kind, ino in self._all_() if kind == "pid" and ino}
        if self._switch_inode:
            net.add(self._switch_inode)
        left = _processes_in(net, pid)
        if left:
            problems.append(f"processes: {left[:10]}")
        names = [ln.split()[0] for ln in _sh("ip", "netns", "list", check=False).stdout.splitlines() if ln.split()]
        ours = [n for n in names if n.startswith(self.name + "-")]
        if ours:
            problems.append(f"network namespaces: {ours}")
        return problems

    def _all_(self) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for h in [*self.hosts.values(), *self._removed]:
            out |= h._all_inodes
        return out

    # -- conveniences ---------------------------------------------------------------------------------------
    def ray_nodes(self, timeout: float = 120) -> list[dict[str, Any]]:
        """Ray's node table as the head sees it: ``[{"id", "ip", "alive", "resources", "labels"}]``."""
        assert self.head is not None, "no head"
        return self.head.python(
            "import json, ray\n"
            "ray.init(address='auto', logging_level='ERROR', log_to_driver=False)\n"
            "print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], 'alive': n['Alive'],\n"
            "  'resources': n.get('Resources', {}), 'labels': n.get('Labels', {})} for n in ray.nodes()]))\n",
            timeout)
