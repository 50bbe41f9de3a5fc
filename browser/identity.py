"""Browser identities: a realistic, internally consistent "Chrome on <OS>" fingerprint per context.

An :class:`Identity` bundles what a site can observe: user agent and client-hint brands, platform,
viewport and screen, device scale factor, locale and languages, timezone and geolocation, hardware
concurrency and device memory, WebGL vendor/renderer and a canvas/audio noise seed.

:class:`IdentityFactory` draws the hardware side (screen, window, GPU, cores, memory, OS version) from
browserforge's Bayesian network of real Chrome fingerprints, then makes it agree with the engine that
really runs: the UA is Chrome's reduced UA string for the running Chromium's major version, the
client-hint brands are the ones Chrome itself generates for that major (its GREASE algorithm), the
OS tokens of UA, ``navigator.platform`` and ``Sec-CH-UA-Platform`` agree, and locale, timezone and
geolocation follow the proxy's country. :func:`consistency_problems` states these rules as code.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from fleet_ray.spec.browser_options import COUNTRIES, IdentityOptions, OsName

UA_OS_TOKEN = {
    "windows": "Windows NT 10.0; Win64; x64",
    "macos": "Macintosh; Intel Mac OS X 10_15_7",
    "linux": "X11; Linux x86_64",
}
NAV_PLATFORM = {"windows": "Win32", "macos": "MacIntel", "linux": "Linux x86_64"}
CH_PLATFORM = {"windows": "Windows", "macos": "macOS", "linux": "Linux"}
CHROME_UI_HEIGHT = {"windows": (80, 88), "macos": (79, 87), "linux": (77, 85)}
DEVICE_MEMORY = (0.25, 0.5, 1, 2, 4, 8)
_BAD_GPU = re.compile(r"swiftshader|llvmpipe|softpipe|virtualbox|vmware|microsoft basic", re.I)
_OTHER_BROWSER = re.compile(r"Edg/|OPR/|YaBrowser|SamsungBrowser|Firefox|Safari/60|Version/\d", re.I)


class Brand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    brand: str
    version: str


class Identity(BaseModel):
    """Everything a page can see of "who" the browser is. Frozen: a session keeps it unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    os: OsName
    country: str
    user_agent: str
    brands: list[Brand]
    full_version_list: list[Brand]
    full_version: str
    platform: str
    ch_platform: str
    ch_platform_version: str
    architecture: str
    bitness: str
    viewport_width: int
    viewport_height: int
    outer_width: int
    outer_height: int
    screen_width: int
    screen_height: int
    avail_width: int
    avail_height: int
    color_depth: int
    device_scale_factor: float
    locale: str
    languages: list[str]
    timezone: str
    latitude: float
    longitude: float
    accuracy: float
    hardware_concurrency: int
    device_memory: float
    webgl_vendor: str
    webgl_renderer: str
    noise_seed: int
    created_at: float

    @property
    def chrome_major(self) -> int:
        m = re.search(r"Chrome/(\d+)\.", self.user_agent)
        return int(m.group(1)) if m else 0

    @property
    def accept_language(self) -> str:
        parts = [self.languages[0]]
        q = 0.9
        for lang in self.languages[1:]:
            parts.append(f"{lang};q={q:.1f}")
            q = max(0.1, q - 0.1)
        return ",".join(parts)

    def context_options(self) -> dict[str, Any]:
        """Keyword arguments for ``browser.new_context`` (what Playwright can set natively)."""
        # No user_agent/locale here: Playwright would set them on pages and dedicated workers itself,
        # without client-hint brands and with navigator.languages cut to the locale, racing the slot's
        # own overrides (:mod:`fleet_ray.browser.scopes`), which set both on every scope. No permissions
        # either: granting one makes Chromium deny every other, where a fresh profile says "prompt".
        return {
            "viewport": {"width": self.viewport_width, "height": self.viewport_height},
            "screen": {"width": self.screen_width, "height": self.screen_height},
            "device_scale_factor": self.device_scale_factor,
            "timezone_id": self.timezone,
            "geolocation": {"latitude": self.latitude, "longitude": self.longitude, "accuracy": self.accuracy},
            "is_mobile": False,
            "has_touch": False,
            "color_scheme": "light",
            # the context's own HTTP requests (context.request) carry the identity too
            "extra_http_headers": {"Accept-Language": self.accept_language, "User-Agent": self.user_agent},
        }

    def ua_override(self) -> dict[str, Any]:
        """Parameters of CDP ``Emulation.setUserAgentOverride``: UA, Sec-CH-UA metadata, platform."""
        return {
            "userAgent": self.user_agent,
            "acceptLanguage": ",".join(self.languages),  # Chromium adds the q-values itself
            "platform": self.platform,
            "userAgentMetadata": {
                "brands": [b.model_dump() for b in self.brands],
                "fullVersionList": [b.model_dump() for b in self.full_version_list],
                "fullVersion": self.full_version,
                "platform": self.ch_platform,
                "platformVersion": self.ch_platform_version,
                "architecture": self.architecture,
                "model": "",
                "mobile": False,
                "bitness": self.bitness,
                "wow64": False,
            },
        }

    def script_config(self) -> dict[str, Any]:
        """What the init script (:mod:`fleet_ray.browser.stealth`) needs."""
        return {
            "platform": self.platform,
            "hardwareConcurrency": self.hardware_concurrency,
            "deviceMemory": self.device_memory,
            "webglVendor": self.webgl_vendor,
            "webglRenderer": self.webgl_renderer,
            "outerWidth": self.outer_width,
            "outerHeight": self.outer_height,
            "availWidth": self.avail_width,
            "availHeight": self.avail_height,
            "colorDepth": self.color_depth,
            "languages": self.languages,
            "userAgent": self.user_agent,
            "uaData": {
                "brands": [b.model_dump() for b in self.brands],
                "mobile": False,
                "platform": self.ch_platform,
                "high": {
                    "architecture": self.architecture,
                    "bitness": self.bitness,
                    "fullVersionList": [b.model_dump() for b in self.full_version_list],
                    "model": "",
                    "platform": self.ch_platform,
                    "platformVersion": self.ch_platform_version,
                    "uaFullVersion": self.full_version,
                    "wow64": False,
                },
            },
            "notification": "default",  # a fresh profile has not been asked yet
            "seed": self.noise_seed,
        }


def grease_brands(major: int, brand: str) -> list[tuple[str, str]]:
    """Chrome's client-hint brand list for a major version (``GenerateBrandVersionList``)."""
    chars = [" ", "(", ":", "-", ".", "/", ")", ";", "=", "?", "_"]
    versions = ["8", "99", "24"]
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    greased = (f"Not{chars[major % len(chars)]}A{chars[(major + 1) % len(chars)]}Brand", versions[major % 3])
    chromium = ("Chromium", str(major))
    if brand == "Chromium":  # a Chromium build lists two brands, greased first
        return [greased, chromium]
    order = orders[major % 6]
    out: list[tuple[str, str]] = [("", "")] * 3
    out[order[0]], out[order[1]], out[order[2]] = greased, chromium, (brand, str(major))
    return out


def parse_engine_version(version: str) -> tuple[int, str]:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)$", version.strip())
    if not m:
        raise ValueError(f"not a Chromium version: {version!r}")
    return int(m.group(1)), version.strip()


class IdentityFactory:
    """Generates identities for one engine version; ``rng`` makes it reproducible."""

    def __init__(self, options: IdentityOptions, engine_version: str, rng: random.Random | None = None,
                 clock=time.time, pool_size: int = 48):
        from browserforge.fingerprints import FingerprintGenerator

        self.options = options
        self.major, self.full_version = parse_engine_version(engine_version)
        self.rng = rng or random.Random(options.seed)
        self.clock = clock
        self.pool_size = pool_size
        self._generators = {
            os_name: FingerprintGenerator(browser="chrome", os=os_name, device="desktop")
            for os_name in options.os
        }
        # Drawing from browserforge's network is slow (tens of ms, far more on a busy machine), so
        # hardware samples are pooled per OS: the first ``pool_size`` draws are fresh, later ones
        # reuse a pooled sample with a new noise seed, geolocation and window size.
        self._pool: dict[str, list[Any]] = {os_name: [] for os_name in options.os}

    def warm(self, per_os: int | None = None) -> None:
        """Fill the sample pools (call from a thread at start-up)."""
        for os_name in self.options.os:
            while len(self._pool[os_name]) < min(per_os or self.pool_size, self.pool_size):
                self._pool[os_name].append(self._fresh(os_name))

    def generate(self, country: str | None = None) -> Identity:
        country = (country or self.options.country).upper()
        if country not in COUNTRIES:
            country = self.options.country
        os_name: OsName = self.rng.choice(list(self.options.os))
        for _ in range(50):
            fp = self._sample(os_name)
            ident = self._build(os_name, country, fp)
            if ident is not None and not consistency_problems(ident):
                return ident
            if fp in self._pool[os_name]:
                self._pool[os_name].remove(fp)
        raise RuntimeError(f"could not draw a consistent {os_name} fingerprint in 50 tries")

    def _sample(self, os_name: str) -> Any:
        pool = self._pool[os_name]
        if len(pool) < self.pool_size:
            pool.append(self._fresh(os_name))
            return pool[-1]
        return self.rng.choice(pool)

    def _fresh(self, os_name: str) -> Any:
        if self.options.seed is None:
            return self._generators[os_name].generate()
        # browserforge draws from Python's global random: seed it from ours for reproducible tests
        state = random.getstate()
        random.seed(self.rng.getrandbits(64))
        try:
            return self._generators[os_name].generate()
        finally:
            random.setstate(state)

    def _build(self, os_name: OsName, country: str, fp: Any) -> Identity | None:
        nav, scr, card = fp.navigator, fp.screen, fp.videoCard
        if _OTHER_BROWSER.search(nav.userAgent) or card is None:
            return None
        if _BAD_GPU.search(card.renderer or "") or not card.vendor or not card.renderer:
            return None
        if ("Apple" in card.renderer or "Apple" in card.vendor) != (os_name == "macos") and "Apple" in card.renderer:
            return None
        width, height = int(scr.width or 0), int(scr.height or 0)
        if not (1024 <= width <= 2560 and 700 <= height <= 1600):
            return None
        avail_w = int(scr.availWidth or width)
        avail_h = int(scr.availHeight or height)
        avail_w, avail_h = min(avail_w, width), min(avail_h, height)
        outer_w = int(scr.outerWidth or 0)
        outer_h = int(scr.outerHeight or 0)
        if not 800 <= outer_w <= avail_w:
            outer_w = avail_w
        if not 600 <= outer_h <= avail_h:
            outer_h = avail_h
        lo, hi = CHROME_UI_HEIGHT[os_name]
        vw, vh = outer_w, outer_h - self.rng.randint(lo, hi)
        if (vw, vh) == (800, 600) or vh < 500:
            return None
        uad = nav.userAgentData or {}
        locale, extra, tz, lat, lon = COUNTRIES[country]
        brands = grease_brands(self.major, self.options.brand)
        full = [(b, self.full_version if b in ("Chromium", self.options.brand) else f"{v}.0.0.0") for b, v in brands]
        memory = float(nav.deviceMemory or 8)
        memory = max(m for m in DEVICE_MEMORY if m <= max(memory, 0.25))
        cores = int(nav.hardwareConcurrency or 8)
        cores = cores if 2 <= cores <= 32 else 8
        seed = self.rng.getrandbits(31)
        ua = (
            f"Mozilla/5.0 ({UA_OS_TOKEN[os_name]}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{self.major}.0.0.0 Safari/537.36"
        )
        platform_version = str(uad.get("platformVersion") or "")
        if os_name == "windows" and not re.match(r"^\d+\.\d+\.\d+$", platform_version):
            platform_version = self.rng.choice(["10.0.0", "15.0.0", "19.0.0"])
        elif os_name == "macos" and not re.match(r"^1[0-9]\.\d+\.\d+$", platform_version):
            platform_version = self.rng.choice(["14.6.1", "15.3.0", "15.6.0"])
        elif os_name == "linux":
            platform_version = platform_version if re.match(r"^\d+\.\d+\.\d+$", platform_version) else "6.8.0"
        arch = str(uad.get("architecture") or "x86")
        if os_name != "macos":
            arch = "x86"
        return Identity(
            id=hashlib.sha1(f"{seed}:{self.rng.random()}".encode()).hexdigest()[:12],
            os=os_name,
            country=country,
            user_agent=ua,
            brands=[Brand(brand=b, version=v) for b, v in brands],
            full_version_list=[Brand(brand=b, version=v) for b, v in full],
            full_version=self.full_version,
            platform=NAV_PLATFORM[os_name],
            ch_platform=CH_PLATFORM[os_name],
            ch_platform_version=platform_version,
            architecture=arch,
            bitness="64",
            viewport_width=vw,
            viewport_height=vh,
            outer_width=outer_w,
            outer_height=outer_h,
            screen_width=width,
            screen_height=height,
            avail_width=avail_w,
            avail_height=avail_h,
            color_depth=int(scr.colorDepth or 24),
            device_scale_factor=float(scr.devicePixelRatio or 1),
            locale=locale,
            languages=[locale, *extra],
            timezone=tz,
            latitude=round(lat + self.rng.uniform(-0.05, 0.05), 5),
            longitude=round(lon + self.rng.uniform(-0.05, 0.05), 5),
            accuracy=float(self.rng.randint(20, 120)),
            hardware_concurrency=cores,
            device_memory=memory,
            webgl_vendor=card.vendor,
            webgl_renderer=card.renderer,
            noise_seed=seed,
            created_at=self.clock(),
        )


ConsistencyRule = Literal["ua", "brands", "platform", "viewport", "geo", "hardware", "gpu"]


def consistency_problems(ident: Identity, engine_major: int | None = None) -> list[str]:
    """Every rule an identity must satisfy; an empty list means consistent."""
    problems: list[str] = []
    ua = ident.user_agent
    if "Headless" in ua or _OTHER_BROWSER.search(ua) or "Chrome/" not in ua:
        problems.append(f"ua: not a plain Chrome user agent: {ua}")
    major = ident.chrome_major
    if engine_major is not None and major != engine_major:
        problems.append(f"ua: Chrome/{major} but the engine is {engine_major}")
    if UA_OS_TOKEN[ident.os] not in ua:
        problems.append(f"ua: OS token does not match {ident.os}")
    brand_majors = {b.brand: b.version for b in ident.brands}
    if brand_majors.get("Chromium") != str(major):
        problems.append("brands: Chromium brand version differs from the UA's Chrome major")
    if any("Headless" in b.brand for b in ident.brands):
        problems.append("brands: a headless brand")
    if ident.platform != NAV_PLATFORM[ident.os] or ident.ch_platform != CH_PLATFORM[ident.os]:
        problems.append("platform: navigator.platform / client-hint platform do not match the OS")
    if not (ident.viewport_width <= ident.screen_width and ident.viewport_height < ident.screen_height):
        problems.append("viewport: not smaller than the screen")
    if ident.outer_height <= ident.viewport_height or ident.outer_width < ident.viewport_width:
        problems.append("viewport: window (outer) smaller than the viewport")
    locale, _extra, tz, lat, lon = COUNTRIES[ident.country]
    if ident.locale != locale or ident.languages[0] != locale or ident.timezone != tz:
        problems.append(f"geo: locale/timezone do not match country {ident.country}")
    if abs(ident.latitude - lat) > 0.5 or abs(ident.longitude - lon) > 0.5:
        problems.append(f"geo: geolocation is not in country {ident.country}")
    if ident.device_memory not in DEVICE_MEMORY or not 2 <= ident.hardware_concurrency <= 32:
        problems.append("hardware: impossible deviceMemory or hardwareConcurrency")
    if _BAD_GPU.search(ident.webgl_renderer) or ("Apple" in ident.webgl_renderer and ident.os != "macos"):
        problems.append(f"gpu: renderer {ident.webgl_renderer!r} does not fit {ident.os}")
    return problems
