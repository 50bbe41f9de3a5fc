"""The pip-package path end to end: install the example package, find it by entry point, run it."""

from __future__ import annotations

import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from fleet_ray.errors import SpecError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet-ray-example"


@pytest.fixture(scope="module")
def example_installed():
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(EXAMPLE)],
                   check=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "fleet-ray-example"], check=True)


@pytest.fixture(scope="module")
def shop():
    prices = {"/a": ("12.50", "EUR"), "/b": ("30", "USD")}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            p = prices.get(self.path)
            body = (f'<span data-price="{p[0]}" data-currency="{p[1]}">x</span>' if p else "no price").encode()
            self.send_response(200 if p else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_installed_example_package_runs_in_a_pool(example_installed, shop, fleet):
    fleet.apply({"pools": [{"name": "prices", "automation": "example.prices", "version": "1.0.0",
                            "slots": 2, "config": {"alert_below": "20"}}]})
    st = fleet.wait_ready(60)
    assert {s.version for s in st.pool("prices").slots} == {"1.0.0"}
    results = fleet.map("prices", [{"url": f"{shop}/a"}, {"url": f"{shop}/b"}, {"url": "not a url"}], timeout_s=60)
    assert results[0].value == {"url": f"{shop}/a", "price": "12.50", "currency": "EUR", "below_alert": True}
    assert results[1].value["below_alert"] is False and results[1].value["currency"] == "USD"
    assert not results[2].ok and "ValidationError" in results[2].error  # a bad item fails alone
    # a pin the installed package doesn't satisfy is refused, naming the pool
    with pytest.raises(SpecError, match=r"pools.prices.automation: .*fleet-ray-example==2.0.0 but fleet-ray-example 1.0.0"):
        fleet.apply({"pools": [{"name": "prices", "automation": "example.prices", "version": "2.0.0", "slots": 2}]})
    assert fleet.status().pool("prices").version == "==1.0.0"
