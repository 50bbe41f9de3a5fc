"""The demo's automations and the site they crawl (``fleet-ray demo``, see :mod:`fleet_ray.cli.demo`).

- :class:`DemoSite` serves a small generated site on loopback;
- ``demo.fetch-title`` (:class:`FetchTitle`, batch): fetch a page, extract its title and links;
- ``demo.heartbeat`` (:class:`Heartbeat`, continuous): check a URL every few seconds.
"""

from __future__ import annotations

import asyncio
import html
import re
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
