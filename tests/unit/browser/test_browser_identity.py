"""Generated identities are realistic (browserforge data) and internally consistent."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fleet_ray.browser.identity import (
    CH_PLATFORM,
    NAV_PLATFORM,
    IdentityFactory,
    consistency_problems,
    grease_brands,
    parse_engine_version,
)
from fleet_ray.browser.scopes import ScopeOverrides
from fleet_ray.browser.stealth import init_script
from fleet_ray.spec.browser_options import COUNTRIES, IdentityOptions

ENGINE = "156.0.8078.79"


@pytest.fixture(scope="module")
def identities():
    factory = IdentityFactory(IdentityOptions(seed=7), ENGINE, pool_size=12)
    rng = random.Random(3)
    return [factory.generate(rng.choice([None, "DE", "JP", "BR", "FR"])) for _ in range(120)]


def test_brands_follow_chromes_grease_algorithm():
    # values observed from real Chrome/Chromium builds
    assert grease_brands(147, "Google Chrome") == [("Google Chrome", "147"), ("Not.A/Brand", "8"), ("Chromium", "147")]
    assert grease_brands(156, "Chromium") == [("Not:A-Brand", "8"), ("Chromium", "156")]
    assert grease_brands(156, "Google Chrome") == [("Not:A-Brand", "8"), ("Chromium", "156"), ("Google Chrome", "156")]


def test_engine_version_parsing():
    assert parse_engine_version("156.0.8078.79") == (156, "156.0.8078.79")
    with pytest.raises(ValueError):
        parse_engine_version("HeadlessChrome/156")


def test_every_identity_is_consistent(identities):
    for ident in identities:
        assert consistency_problems(ident, engine_major=156) == [], ident
        assert "Headless" not in ident.user_agent and "Chrome/156.0.0.0" in ident.user_agent
        assert ident.platform == NAV_PLATFORM[ident.os] and ident.ch_platform == CH_PLATFORM[ident.os]
        assert ident.viewport_width <= ident.screen_width and ident.viewport_height < ident.screen_height
        assert [b.brand for b in ident.brands if b.brand in ("Chromium", "Google Chrome")] and all(
            b.version == "156" for b in ident.brands if b.brand in ("Chromium", "Google Chrome")
        )
        meta = ident.ua_override()["userAgentMetadata"]
        assert meta["platform"] == ident.ch_platform and meta["fullVersion"] == ENGINE


def test_geo_follows_country(identities):
    for ident in identities:
        locale, _extra, tz, lat, lon = COUNTRIES[ident.country]
        assert ident.locale == locale and ident.languages[0] == locale and ident.timezone == tz
        assert abs(ident.latitude - lat) < 0.1 and abs(ident.longitude - lon) < 0.1
        opts = ident.context_options()
        # locale and user agent are the slot's own CDP overrides on every scope, not Playwright's
        assert "locale" not in opts and "user_agent" not in opts and opts["timezone_id"] == tz
        assert "permissions" not in opts  # granting one permission denies the others
        assert opts["extra_http_headers"]["Accept-Language"].startswith(locale)
        assert opts["extra_http_headers"]["User-Agent"] == ident.user_agent
        overrides = ScopeOverrides(ident)
        sent = dict(overrides.messages())
        assert sent["Emulation.setLocaleOverride"] == {"locale": locale}
        assert sent["Emulation.setTimezoneOverride"] == {"timezoneId": tz}
        assert sent["Emulation.setUserAgentOverride"]["acceptLanguage"] == ",".join(ident.languages)
        assert ident.user_agent in overrides.script and ident.languages[0] in overrides.script


def test_identities_are_varied_and_distinct(identities):
    assert Counter(i.os for i in identities).keys() == {"windows", "macos", "linux"}
    assert len({i.id for i in identities}) == len(identities)
    assert len({i.noise_seed for i in identities}) == len(identities)
    assert len({i.webgl_renderer for i in identities}) >= 5
    assert len({(i.screen_width, i.screen_height) for i in identities}) >= 4
    for i in identities:
        if "Apple" in i.webgl_renderer:
            assert i.os == "macos"


def test_seed_makes_identities_reproducible():
    a = IdentityFactory(IdentityOptions(seed=11), ENGINE, pool_size=2)
    b = IdentityFactory(IdentityOptions(seed=11), ENGINE, pool_size=2)
    first = [a.generate().model_dump(exclude={"created_at"}) for _ in range(3)]
    second = [b.generate().model_dump(exclude={"created_at"}) for _ in range(3)]
    assert first == second


def test_os_restriction():
    f = IdentityFactory(IdentityOptions(seed=2, os=["linux"], brand="Chromium"), ENGINE, pool_size=2)
    for _ in range(5):
        ident = f.generate()
        assert ident.os == "linux" and "X11; Linux x86_64" in ident.user_agent
        assert [b.brand for b in ident.brands] == ["Not:A-Brand", "Chromium"]


def test_init_script_is_valid_javascript(identities, tmp_path):
    import subprocess
    from pathlib import Path

    import playwright

    node = Path(playwright.__file__).parent / "driver" / "node"
    script = tmp_path / "stealth.js"
    script.write_text(init_script(identities[0].script_config()))
    proc = subprocess.run([str(node), "--check", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_init_script_embeds_the_identity(identities):
    script = init_script(identities[0].script_config())
    assert f'"webglRenderer":"{identities[0].webgl_renderer}"'.replace("/", "/") in script or (
        identities[0].webgl_renderer in script
    )
    assert str(identities[0].noise_seed) in script
    assert "__CONFIG__" not in script


def test_a_worker_script_gets_the_identity_script_first_and_keeps_its_strict_mode():
    from fleet_ray.browser.scopes import with_prelude

    assert with_prelude("postMessage(1);", "PRELUDE") == "\nPRELUDE\npostMessage(1);"
    strict = with_prelude("'use strict';\nlet x = 1;", "PRELUDE")
    assert strict.startswith("'use strict';") and strict.index("PRELUDE") < strict.index("let x")
    assert with_prelude('\ufeff "use strict"\nx()', "P").startswith('\ufeff "use strict"\nP')
    assert with_prelude("// 'use strict' later\n", "P") == "\nP\n// 'use strict' later\n"
