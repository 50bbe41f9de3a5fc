"""The Redis password comes from FLEET_STORE_PASSWORD_FILE when the URL has none (how every host of a
cluster gets it without the URL carrying it), checked against a real password-protected Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from fleet_ray.errors import StoreError, StoreUnavailable
from fleet_ray.store import open_store


@pytest.fixture
def locked_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server must be installed for this test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nrequirepass p4ss-w0rd\ndir {tmp_path}\n")
    proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


def test_the_password_file_opens_a_locked_server_and_no_error_names_the_password(locked_redis, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.delenv("FLEET_STORE_PASSWORD_FILE", raising=False)
    with pytest.raises(StoreUnavailable) as exc:
        open_store(locked_redis, "t").ping()
    secret = tmp_path / "store.password"
    secret.write_text("p4ss-w0rd\n")
    monkeypatch.setenv("FLEET_STORE_PASSWORD_FILE", str(secret))
    store = open_store(locked_redis, "t")
    store.put("k", b"v")
    assert store.get("k") == b"v"
    store.close()
    secret.write_text("wrong\n")
    with pytest.raises(StoreUnavailable) as exc:
        open_store(locked_redis, "t").ping()
    assert "p4ss-w0rd" not in str(exc.value) and "wrong" not in str(exc.value)


def test_a_missing_password_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_STORE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(StoreError, match="FLEET_STORE_PASSWORD_FILE"):
        open_store("redis://127.0.0.1:1/0", "t").ping()
