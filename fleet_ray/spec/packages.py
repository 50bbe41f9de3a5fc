"""Automation packages shipped to the cluster: publish a wheel into the store, unpack it for slots.

``fleet-ray publish PATH_OR_WHEEL`` builds a wheel (if given a project directory) and stores its
bytes in the fleet's store under ``package:<name>==<version>``. A pool that names
``package: <name>==<version>`` gets slots whose Ray runtime environment carries the unpacked wheel
as ``py_modules`` — the package's modules *and* its ``.dist-info`` (so the entry point and the
installed version are seen on every node). Nothing is installed on worker hosts by hand, and two
pools can run two versions side by side. Dependencies are not installed: the cluster provides
fleet-ray and its requirements; list anything else the package needs in the hosts' setup.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from fleet_ray.errors import FleetError
from fleet_ray.store import keys
from fleet_ray.store.base import Store

_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-.*\.whl$")
_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[A-Za-z0-9_.+!-]+)$")


class PackageError(FleetError):
    """A package can't be built, found, or unpacked."""


def parse_ref(ref: str) -> tuple[str, str]:
    m = _REF.match(ref.strip())
    if not m:
        raise ValueError(f"package must look like 'name==version', got {ref!r}")
    return keys.canonical(m.group("name")), m.group("version")


def wheel_name_version(path: Path) -> tuple[str, str]:
    m = _WHEEL.match(path.name)
    if not m:
        raise PackageError(f"{path.name} is not a wheel file name")
    return keys.canonical(m.group("name")), m.group("version")


def build_wheel(project: Path, out_dir: Path) -> Path:
    """Build a wheel from a project directory (no build isolation: works offline)."""
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir), str(project)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out_dir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise PackageError(f"building a wheel from {project} failed: {' | '.join(tail)}")
    return wheels[-1]


def publish(store: Store, path: str | Path) -> tuple[str, str]:
    """Store a wheel (built from ``path`` if it is a project directory); returns (name, version)."""
    path = Path(path)
    if not path.exists():
        raise PackageError(f"{path} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(path, Path(tmp)) if path.is_dir() else path
        name, version = wheel_name_version(wheel)
        store.put_many({keys.package(name, version): wheel.read_bytes(),
                        keys.package(name, version) + ":file": wheel.name.encode()})
    return name, version


def unpack(store: Store, ref: str, cache_dir: Path) -> list[str]:
    """Unpack a published package under ``cache_dir`` (once) and return its py_modules entries."""
    name, version = parse_ref(ref)
    target = cache_dir / f"{name}-{version}"
    if not (target / ".complete").exists():
        data = store.get(keys.package(name, version))
        filename = (store.get(keys.package(name, version) + ":file") or b"").decode()
        if data is None or not filename:
            raise PackageError(f"package {name}=={version} was never published (run `fleet-ray publish`)")
        target.mkdir(parents=True, exist_ok=True)
        wheel = target.parent / filename
        wheel.write_bytes(data)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target / "site"),
             str(wheel)],
            capture_output=True,
            text=True,
        )
        wheel.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise PackageError(f"unpacking {name}=={version} failed: {proc.stderr.strip()[-300:]}")
        (target / ".complete").touch()
    site = target / "site"
    return sorted(str(p) for p in site.iterdir() if p.is_dir() and p.name not in ("bin", "__pycache__"))
