"""``fleet-ray demo``: a whole fleet on one laptop, with no Redis and no internet.

It serves a small generated site on loopback, starts a local Ray cluster, the supervisor on the
embedded store, and two pools — ``titles`` (batch: fetch each page, extract title and links) and
``heartbeat`` (continuous: check the home page every second) — then crawls the site while printing
live status, and tears everything down.
"""

from __future__ import annotations

import asyncio
import html
import re
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.automation import BatchAutomation, ContinuousAutomation

_TITLE = re.compile(r"<title>(.*?)</title>", re.I | re.S)
_LINK = re.compile(r'href="([^"]+)"', re.I)


class DemoSite:
    """A generated site of ``pages`` linked pages on 127.0.0.1 (a thread; ``close()`` stops it)."""

    def __init__(self, pages: int = 30, host: str = "127.0.0.1"):
        self.pages = pages
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body, status = site.render(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def render(self, path: str) -> tuple[str, int]:
        if path in ("/", "/index.html"):
            links = "".join(f'<li><a href="/page/{i}">page {i}</a></li>' for i in range(self.pages))
            return f"<html><head><title>Demo site</title></head><body><ul>{links}</ul></body></html>", 200
        m = re.fullmatch(r"/page/(\d+)", path)
        if not m or int(m.group(1)) >= self.pages:
            return "<html><head><title>Not found</title></head></html>", 404
        i = int(m.group(1))
        links = "".join(f'<a href="/page/{(i * 7 + k) % self.pages}">next</a>' for k in range(1, 4))
        return f"<html><head><title>Demo page {i}</title></head><body>{links}</body></html>", 200

    def page_urls(self) -> list[str]:
        return [f"{self.url}/page/{i}" for i in range(self.pages)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fetch(url: str, timeout: float, user_agent: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"User-Agent": user_agent})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode("utf-8", "replace")


class FetchTitle(BatchAutomation):
    """Fetch a page over HTTP and extract its title and links."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        timeout_s: float = Field(10.0, gt=0, description="HTTP timeout per page.")
        user_agent: str = "fleet-ray-demo/0.1"

    async def process(self, item: str) -> dict[str, Any]:
        status, body = await asyncio.to_thread(_fetch, item, self.config.timeout_s, self.config.user_agent)
        m = _TITLE.search(body)
        return {
            "url": item,
            "status": status,
            "title": html.unescape(m.group(1).strip()) if m else None,
            "links": len(_LINK.findall(body)),
        }

    def reconfigure(self, config: Config) -> bool:
        return True  # both fields take effect on the next item


class Heartbeat(ContinuousAutomation):
    """Check a URL every ``every_s`` seconds and report the result as progress."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        url: str
        every_s: float = Field(1.0, gt=0)

    async def run(self) -> None:
        checks = failures = 0
        while await self.ctx.sleep(self.config.every_s):
            checks += 1
            try:
                status, _ = await asyncio.to_thread(_fetch, self.config.url, 5.0, "fleet-ray-heartbeat")
            except OSError as exc:
                failures += 1
                self.ctx.log.warning("heartbeat to %s failed: %s", self.config.url, exc)
                status = 0
            self.ctx.report_progress(checks=checks, failures=failures, last_status=status)


def demo_spec(site_url: str, slots: int = 2) -> dict[str, Any]:
    return {
        "name": "demo",
        "pools": [
            {
                "name": "titles",
                "automation": "demo.fetch-title",
                "slots": slots,
                "concurrency": 4,
                "config": {"timeout_s": 5},
                "health": {"period_s": 1, "timeout_s": 5},
            },
            {
                "name": "heartbeat",
                "automation": "demo.heartbeat",
                "slots": 1,
                "config": {"url": site_url + "/", "every_s": 0.5},
                "health": {"period_s": 1, "timeout_s": 5},
            },
        ],
    }


def run_demo(pages: int = 30, slots: int = 2, out=print, live: bool = True) -> dict[str, Any]:
    """Run the demo end to end; returns a summary (pages crawled, failures, titles seen)."""
    import ray

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.cli_render import progress_line, render_status
    from fleet_ray.client import FleetClient

    site = DemoSite(pages)
    tmp = tempfile.TemporaryDirectory(prefix="fleet-ray-demo-")
    namespace = "fleet-demo"
    try:
        out(f"demo site: {site.url} ({pages} pages)")
        ray.init(address="local", namespace=namespace, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        store_url = f"sqlite://{tmp.name}/store.db"
        sup = start_supervisor(store_url, namespace=namespace, fleet_name="demo")
        fleet = FleetClient(sup, namespace)
        fleet.apply(demo_spec(site.url, slots))
        out(render_status(fleet.wait_ready(timeout_s=120)))
        job = fleet.submit("titles", site.page_urls())
        results = []
        import time

        started = time.monotonic()
        for r in job.results(timeout_s=300):
            results.append(r)
            if live:
                out(progress_line(job.done, job.failed, job.total, time.monotonic() - started), end="\r")
        if live:
            out("")
        # let one health check round report the finished tasks and a few heartbeats
        status = fleet.wait_until(
            lambda st: sum(s.tasks for s in st.pool("titles").slots) >= len(results)
            and (st.pool("heartbeat").slots[0].progress or {}).get("checks", 0) >= 2,
            timeout_s=30,
        )
        out(render_status(status))
        titles = sorted({r.value["title"] for r in results if r.ok})
        summary = {
            "pages": len(results),
            "ok": sum(r.ok for r in results),
            "failed": sum(not r.ok for r in results),
            "titles": len(titles),
            "heartbeat_checks": (status.pool("heartbeat").slots[0].progress or {}).get("checks", 0),
        }
        out(f"crawled {summary['ok']}/{summary['pages']} pages, {summary['titles']} distinct titles, "
            f"heartbeat checks: {summary['heartbeat_checks']}")
        fleet.down(timeout_s=10)
        return summary
    finally:
        if ray.is_initialized():
            ray.shutdown()
        site.close()
        tmp.cleanup()
