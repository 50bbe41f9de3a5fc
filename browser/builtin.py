"""A ready-made browser automation: open a URL, return its title, links and status.

Registered as ``browser.page-info``. An item is a URL string or ``{"url": ...}``::

    fleet.submit("crawl", ["http://127.0.0.1:8000/", ...]).wait()
    # → {"url": ..., "status": 200, "title": "...", "links": ["http://...", ...]}

``evaluate`` (a JavaScript expression, awaited in the page after load) lets a pool return more,
e.g. ``"window.report"``; ``wait_for`` waits for a JavaScript condition first.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_ray.errors import NavigationError

from .automation import BrowserAutomation

EXTRACT_JS = ("links => [document.title, location.origin, "
              "links ? Array.from(document.querySelectorAll('a[href]'), a => a.href) : []]")


class PageInfoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_until: Literal["commit", "domcontentloaded", "load", "networkidle"] = "load"
    open_timeout_s: float = Field(30.0, gt=0, description="Timeout of the 'open' phase.")
    extract_timeout_s: float = Field(10.0, gt=0, description="Timeout of the 'extract' phase.")
    links: bool = Field(True, description="Return the page's absolute link targets.")
    same_origin_links: bool = Field(False, description="Only links to the page's own origin.")
    wait_for: str | None = Field(None, description="JavaScript condition to wait for after load.")
    evaluate: str | None = Field(None, description="JavaScript expression whose value is returned as 'value'.")


class PageInfo(BrowserAutomation[PageInfoConfig]):
    Config = PageInfoConfig

    async def visit(self, page: Any, item: Any) -> dict[str, Any]:
        url = item["url"] if isinstance(item, dict) else str(item)
        cfg = self.config
        async with self.ctx.phase("open", timeout=cfg.open_timeout_s):
            self.ctx.step(f"goto {url}")
            response = await page.goto(url, wait_until=cfg.wait_until)
            if response is None:
                raise NavigationError(f"no response for {url}")
            if cfg.wait_for:
                self.ctx.step("wait_for")
                await page.wait_for_function(cfg.wait_for, timeout=cfg.open_timeout_s * 1000)
        async with self.ctx.phase("extract", timeout=cfg.extract_timeout_s):
            title, origin, links = await page.evaluate(EXTRACT_JS, cfg.links)  # one round trip
            out: dict[str, Any] = {"url": page.url, "status": response.status, "title": title}
            if cfg.links:
                if cfg.same_origin_links:
                    links = [x for x in links if x.startswith(origin + "/")]
                out["links"] = links
            if cfg.evaluate:
                out["value"] = await page.evaluate(cfg.evaluate)
        return out
