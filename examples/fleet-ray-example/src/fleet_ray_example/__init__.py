"""An example automation package for fleet-ray: watch product prices on web pages.

Install it next to fleet-ray (``pip install ./examples/fleet-ray-example``) and name it in a pool
as ``automation: example.prices``; pin it with ``version: "1.0.0"``.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from fleet_ray import BatchAutomation

__version__ = "1.0.0"

_PRICE = re.compile(r'data-price="(?P<amount>[0-9]+(?:\.[0-9]+)?)"(?:\s+data-currency="(?P<cur>[A-Z]{3})")?')


class PriceObservation(BaseModel):
    url: str
    price: Decimal | None
    currency: str | None
    below_alert: bool


class PriceWatch(BatchAutomation):
    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        alert_below: Decimal = Field(Decimal("0"), ge=0, description="Flag prices below this amount.")
        timeout_s: float = Field(10.0, gt=0)

    async def process(self, item: dict) -> dict:
        url = str(HttpUrl(item["url"]))
        async with self.ctx.phase("fetch", timeout=self.config.timeout_s):
            body = await asyncio.to_thread(self._get, url)
        async with self.ctx.phase("parse"):
            m = _PRICE.search(body)
            price = Decimal(m.group("amount")) if m else None
        obs = PriceObservation(
            url=url,
            price=price,
            currency=(m.group("cur") if m else None),
            below_alert=price is not None and price < self.config.alert_below,
        )
        return obs.model_dump(mode="json")

    def _get(self, url: str) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=self.config.timeout_s) as resp:
            return resp.read().decode("utf-8", "replace")

    def reconfigure(self, config: Config) -> bool:
        return True
