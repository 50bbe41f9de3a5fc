"""Token revocation through the real FastAPI app (issue 15, item 12): with a token file, deleting or
emptying it revokes the token (control requests get 401), and a rotation is seen at once even when it
keeps the file's mtime. No Ray, no network (Starlette's TestClient calls the app in-process)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fleet_ray.api.models import ApplyResult
from fleet_ray.serve.app import create_app
from fleet_ray.serve.auth import ApiConfig, token_digest
from fleet_ray.serve.backend import CachedStatus

BASE = "http://127.0.0.1:8470"
STATUS = {"fleet": "f", "namespace": "fleet", "supervisor_pid": 1, "supervisor_started": 0.0, "store": "memory://",
          "store_degraded": False, "last_step_ms": 0.0, "steps": 1, "pools": [], "events": []}


class Backend:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def ping(self) -> int:
        return 1

    async def is_ready(self) -> bool:
        return True

    async def status(self) -> CachedStatus:
        return CachedStatus(dict(STATUS), time.monotonic())

    async def apply(self, spec: dict[str, Any]) -> ApplyResult:
        self.applied.append(spec)
        return ApplyResult(added=[], removed=[], changed=[])


def app_with_token_file(path: Path) -> tuple[TestClient, Backend]:
    backend = Backend()
    config = ApiConfig(token_sha256=token_digest(path.read_text().strip()), token_file=str(path),
                       allowed_hosts=["127.0.0.1:8470"])
    return TestClient(create_app(config, backend), base_url=BASE), backend  # type: ignore[arg-type]


def apply(client: TestClient, token: str) -> int:
    return client.post("/api/v1/spec", json={"pools": []}, headers={"Authorization": f"Bearer {token}"}).status_code


def test_deleting_the_token_file_revokes_the_token_until_a_new_one_is_written(tmp_path):
    f = tmp_path / "api-token"
    f.write_text("first-token\n")
    client, backend = app_with_token_file(f)
    assert apply(client, "first-token") == 200
    f.unlink()
    assert apply(client, "first-token") == 401  # fail closed: no file, no token
    f.write_text("\n")
    assert apply(client, "first-token") == 401  # empty: no token either
    f.write_text("second-token\n")
    assert apply(client, "second-token") == 200 and apply(client, "first-token") == 401
    assert len(backend.applied) == 2


def test_a_rotation_that_keeps_the_mtime_takes_effect_at_once(tmp_path):
    f = tmp_path / "api-token"
    f.write_text("aaaa-token\n")
    os.utime(f, (100, 100))
    client, _ = app_with_token_file(f)
    assert apply(client, "aaaa-token") == 200
    f.write_text("bbbb-token\n")  # same length, same mtime
    os.utime(f, (100, 100))
    assert apply(client, "aaaa-token") == 401 and apply(client, "bbbb-token") == 200
