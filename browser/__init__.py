"""The browser add-on (``pip install 'fleet-ray[browser]'``), installed as ``fleet_ray.browser``.

- :class:`BrowserAutomation` - what users subclass (``async def visit(self, page, item)``);
- :mod:`.identity` - consistent Chrome identities (browserforge data + the running engine);
- :mod:`.stealth` - the init script for what context options can't set;
- :mod:`.proxies` / :mod:`.sessions` - proxy health and identity sessions (pure logic);
- :mod:`.host` / :mod:`.runtime` - one Chromium per slot, one fresh context per task, recoveries;
- :mod:`.reaper` - tagging and reaping so no Chromium outlives its slot;
- :mod:`.loopback` - a site server and an authenticating proxy on 127.0.0.1 (tests, demo, bench).

Only :mod:`.host`, :mod:`.runtime` and :mod:`.identity` need Playwright/browserforge at run time;
importing this package does not import Playwright.
"""

from .automation import BrowserAutomation, BrowserSlotContext
from .runtime import TaskInfo

__all__ = ["BrowserAutomation", "BrowserSlotContext", "TaskInfo"]
