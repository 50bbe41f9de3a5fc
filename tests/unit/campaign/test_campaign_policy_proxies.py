"""The policy hook's decisions and the proxy pool's health bookkeeping (pure, fake clock)."""

from __future__ import annotations

import pytest

from fleet_ray.campaign.config import MemberIdentity, target_host
from fleet_ray.campaign.policy import (
    PolicyDecision,
    PolicyRequest,
    capabilities,
    deny_targets,
    enforce,
    evaluate,
)
from fleet_ray.campaign.proxies import MemberProxyPool, is_reputation_hit
from fleet_ray.errors import PolicyDenied
from fleet_ray.testing import FakeClock


def req(host="a.example", member=0):
    return PolicyRequest(campaign_id="c", capabilities=capabilities("request", member, host), member=member,
                         target=host)


def test_capabilities_name_the_operation_member_and_target():
    assert capabilities("dispatch", 3, "x.example") == ["fleet:op", "fleet:dispatch", "member:3", "target:x.example"]
    assert capabilities("op", None, "y.example") == ["fleet:op", "target:y.example"]


@pytest.mark.parametrize(
    ("answer", "allow"),
    [(None, True), (True, True), (False, False), (PolicyDecision(allow=False, reason="r"), False),
     ({"allow": True}, True), ("yes", False)],
)
def test_policy_answers(answer, allow):
    assert evaluate(lambda r: answer, req()).allow is allow


def test_a_policy_that_raises_denies():
    def broken(r):
        raise KeyError("oops")

    d = evaluate(broken, req())
    assert not d.allow and "KeyError" in d.reason


def test_deny_targets_gives_its_reason():
    policy = deny_targets("evil.example")
    with pytest.raises(PolicyDenied) as exc:
        enforce(policy, req("evil.example"))
    assert exc.value.reason == "DENY_TARGET" and "target:evil.example" in exc.value.capabilities
    enforce(policy, req("fine.example"))


def test_target_host_normalises_urls_and_rejects_hostless_ones():
    assert target_host("https://Shop.Example:8443/a?b") == "shop.example"
    assert target_host("shop.example") == "shop.example"
    assert target_host("127.0.0.1:8080") == "127.0.0.1"
    with pytest.raises(ValueError):
        target_host("https:///nohost")


def test_identity_public_view_hides_proxy_credentials_and_cookies():
    ident = MemberIdentity(proxy="http://bob:hunter2@proxy:3128", cookies={"sid": "secret-cookie"})
    view = ident.public()
    assert "hunter2" not in str(view) and "secret-cookie" not in str(view)


def test_pool_round_robins_keeps_members_sticky_and_cools_failing_proxies():
    clock = FakeClock(0)
    pool = MemberProxyPool(["http://p1:1", "http://u:pw@p2:2", "http://p3:3"], max_failures=2, cooldown_s=30, clock=clock)
    first = [pool.for_member(m) for m in range(3)]
    assert first == ["http://p1:1", "http://u:pw@p2:2", "http://p3:3"]
    assert pool.for_member(0) == "http://p1:1"  # sticky
    pool.report("http://p1:1", ok=False)
    pool.report("http://p1:1", ok=False)
    health = {h.proxy_id.split("#")[0]: h for h in pool.health()}
    assert not health["http://p1:1"].healthy and health["http://p1:1"].cooling_until == 30
    assert "pw" not in "".join(h.proxy_id for h in pool.health())
    assert pool.for_member(0) != "http://p1:1"  # moved off the cooling proxy
    clock.advance(31)
    assert all(h.healthy for h in pool.health())


def test_reputation_hit_rotates_the_member_and_counts_a_demerit():
    pool = MemberProxyPool(["http://p1:1", "http://p2:2"], max_failures=5, clock=FakeClock(0))
    assert pool.for_member(7) == "http://p1:1"
    pool.report("http://p1:1", ok=False, reputation_hit=True, member=7)
    assert pool.for_member(7) == "http://p2:2"
    assert pool.health()[0].reputation_demerits == 1
    assert is_reputation_hit(429) and is_reputation_hit(200, text="Please solve this CAPTCHA")
    assert is_reputation_hit(None, "CAPTCHA_DETECTED") and not is_reputation_hit(200)


def test_campaign_page_options_proxy_and_cookie_round_trip_between_httpx_and_playwright():
    import httpx

    from fleet_ray.browser.campaign import (
        context_options,
        jar_to_playwright,
        playwright_proxy,
        playwright_to_jar,
    )

    assert playwright_proxy("http://al%40ice:p%3Ass@10.0.0.5:3128") == {
        "server": "http://10.0.0.5:3128", "username": "al@ice", "password": "p:ss"}
    assert playwright_proxy("socks5://[::1]:1080") == {"server": "socks5://[::1]:1080"}
    assert playwright_proxy(None) is None
    ident = MemberIdentity(user_agent="UA", viewport=(1280, 720), locale="de-DE", timezone="Europe/Berlin",
                     headers={"X-A": "1"})
    opts = context_options(ident, "http://u:p@10.0.0.5:3128")
    assert opts["viewport"] == {"width": 1280, "height": 720} and opts["timezone_id"] == "Europe/Berlin"
    assert opts["locale"] == "de-DE" and opts["extra_http_headers"] == {"X-A": "1"}
    assert opts["proxy"]["password"] == "p" and opts["screen"]["width"] >= 1280

    jar = httpx.Cookies()
    playwright_to_jar([{"name": "sid", "value": "abc", "domain": "shop.test", "path": "/", "expires": -1,
                        "httpOnly": True, "secure": False, "sameSite": "Strict"}], jar)
    assert jar.get("sid", domain="shop.test") == "abc"
    (back,) = jar_to_playwright(jar, "http://shop.test/")
    assert back == {"name": "sid", "value": "abc", "domain": "shop.test", "path": "/", "secure": False,
                    "httpOnly": True, "sameSite": "Strict"}
    plain = httpx.Cookies({"lang": "de"})  # an identity's initial cookies carry no domain
    assert jar_to_playwright(plain, "http://shop.test/x") == [{"name": "lang", "value": "de", "url": "http://shop.test/x"}]
