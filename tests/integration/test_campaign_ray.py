"""Campaigns on a real multi-node Ray cluster with real Redis and a real HTTP target on loopback:
coordinators, race cancellation, shared discovery, teardown, audit tampering, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
import ray
import ray.cloudpickle
import redis

from fleet_ray.campaign import Campaign, SigningKey, verify_audit_file, verify_audit_log
from fleet_ray.campaign.audit import receipts_in_log
from fleet_ray.observe.events import EventLog
from fleet_ray.store import open_store

from .conftest import REDIS_URL, wait_for
from .test_campaign_guardrails_ray import HttpTarget, start_cluster

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tasks defined here run on workers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = start_cluster()  # head + two worker nodes tagged "camp"
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def key():
    return SigningKey.generate()


@pytest.fixture
def ns(redis_url):
    name = f"t-camp-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=f"fleet:{name}:*", count=1000):
        r.delete(k)


@pytest.fixture
def target():
    t = HttpTarget()
    yield t
    t.close()


def campaign(ns, key, members=6, **kw) -> Campaign:
    kw.setdefault("placement", {"resources": {"camp": 1}})
    return Campaign(members, store_url=REDIS_URL, namespace=ns, signing_key=key, **kw)


def test_coordinators_spread_members_over_nodes_and_keep_their_semantics(ray_cluster, ns, key):
    with campaign(ns, key, members=6) as c:
        res = c.broadcast(lambda ctx, item: (ctx.member, ctx.node, item), "x")
        assert [r.value[0] for r in res] == list(range(6)) and all(r.value[2] == "x" for r in res)
        assert len({r.value[1] for r in res}) == 2  # members ran on both worker nodes

        planned = c.plan(lambda i, ident: {"n": i, "id": ident.id}, lambda ctx, item: f"{item['id']}:{item['n'] ** 2}")
        assert [r.value for r in planned] == [f"member-{i}:{i * i}" for i in range(6)]

        calls = c.pipeline([
            lambda ctx, item: ctx.member,
            lambda ctx, n: n if n != 4 else 1 / 0,
            lambda ctx, n: f"final-{n}",
        ])
        assert [r.value for r in calls] == ["final-0", "final-1", "final-2", "final-3", None, "final-5"]
        assert (calls[4].error_type, calls[4].stage) == ("ZeroDivisionError", 1)
        finals = [e for e in c.events.query(kind="campaign.member.complete") if e.data["receipt"]["payload"]["stage"] == 2]
        assert sorted(e.data["receipt"]["payload"]["member"] for e in finals) == [0, 1, 2, 3, 5]


def test_unplaceable_campaign_fails_clearly_and_holds_nothing(ray_cluster, ns, key):
    from fleet_ray.errors import CampaignError

    with pytest.raises(CampaignError, match="no alive node matches"):
        campaign(ns, key, members=2, campaign_id="placed", placement={"resources": {"no-such-tag": 1}})
    with campaign(ns, key, members=2, campaign_id="placed") as c:  # same id: no lease, no receipts left behind
        assert all(r.ok for r in c.broadcast(lambda ctx, _: 1))


def test_race_cancels_siblings_on_other_nodes_and_reports_once(ray_cluster, ns, key, target):
    url = target.url
    with campaign(ns, key, members=6, rate_limit={"per_target_rps": 50}) as c:
        def task(ctx, item):
            if ctx.member == 4:
                ctx.wait(0.5)  # let the siblings get going first
                return "goal"
            while ctx.wait(0.05):  # keeps polling the target until cancelled
                ctx.fetch(f"{url}/poll/{ctx.member}")
            return "late"  # a late success: must be suppressed

        res = c.race(task)
        polls_after = len(target.hits("/poll/"))
        assert [r.winner for r in res] == [False, False, False, False, True, False]
        assert [r.ok for r in res].count(True) == 1
        # every sibling is cancelled: stopped inside a guarded call, or its late "late" suppressed
        assert all(r.cancelled and r.value is None for i, r in enumerate(res) if i != 4)
        receipts = [e.data["receipt"] for e in c.events.query() if "receipt" in e.data]
        kinds = [r["kind"] for r in receipts]
        assert kinds.count("campaign.race.won") == 1 and kinds.count("campaign.member.complete") == 1
        assert kinds.count("campaign.member.cancelled") == 5
    assert len(target.hits("/poll/")) == polls_after  # nobody kept hitting the target after the race


def test_shared_discovery_runs_once_across_nodes(ray_cluster, ns, key, target):
    url = target.url
    with campaign(ns, key, members=6, rate_limit={"per_target_rps": 50}) as c:
        def task(ctx, item):
            return ctx.discover("robots", lambda: ctx.fetch(f"{url}/robots.txt").text)

        res = c.broadcast(task)
        assert all(r.ok for r in res) and len({r.value for r in res}) == 1
        assert len({r.node for r in res}) == 2
        assert len(target.hits("/robots.txt")) == 1


def test_destroy_waits_for_in_flight_members_then_writes_nothing(ray_cluster, ns, key, tmp_path):
    sink = tmp_path / "audit.ndjson"
    c = campaign(ns, key, members=8, active_concurrency=4, audit={"sink": sink})
    out = {}
    counter, redis_url = f"fleet:{ns}:started", REDIS_URL

    def task(ctx, item):
        import redis as r

        r.Redis.from_url(redis_url).incr(counter)  # tell the test this member is in flight
        ctx.wait(1.0)
        return "done"

    t = threading.Thread(target=lambda: out.setdefault("res", c.broadcast(task)))
    t.start()
    rc = redis.Redis.from_url(REDIS_URL)
    wait_for(lambda: int(rc.get(counter) or 0) >= 4, 60, 0.02)  # the four members are in flight
    c.destroy()
    size = sink.stat().st_size
    t.join(30)
    res = out["res"]
    assert [r.ok for r in res].count(True) == 4  # exactly the four in flight ran to completion
    assert all(r.error_type == "CampaignClosed" for r in res if not r.ok)
    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    assert lines[-1]["kind"] == "campaign.closed"
    assert len([x for x in lines if x["kind"] == "campaign.member.complete"]) == 4
    assert verify_audit_file(sink, key.verify_key()).closed
    assert sink.stat().st_size == size
    assert len(receipts_in_log(EventLog(open_store(REDIS_URL, ns)), c.campaign_id)) == len(lines)


def test_audit_file_tampering_is_caught_by_the_cli_at_the_right_line(ray_cluster, ns, key, tmp_path, capsys):
    from fleet_ray.cli.main import main as cli_main

    sink = tmp_path / "audit.ndjson"
    with campaign(ns, key, members=4, audit={"sink": sink}) as c:
        c.broadcast(lambda ctx, _: ctx.member)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key.verify_key().pem())
    good = sink.read_text().splitlines()
    assert verify_audit_log(EventLog(open_store(REDIS_URL, ns)), c.campaign_id, key.verify_key()).ok

    def verify(lines):
        f = tmp_path / "copy.ndjson"
        f.write_text("\n".join(lines) + "\n")
        rc = cli_main(["verify-audit", str(f), "--public-key", str(pub), "--json"])
        return rc, json.loads(capsys.readouterr().out)

    rc, report = verify(good)
    assert rc == 0 and report["closed"] and report["receipts"] == len(good)
    edited = list(good)
    r = json.loads(edited[2])
    r["payload"]["value"] = 42
    edited[2] = json.dumps(r)
    removed = good[:3] + good[4:]
    reordered = good[:1] + [good[2], good[1]] + good[3:]
    for lines, line, kind in [(edited, 3, "bad_signature"), (removed, 4, "missing"), (reordered, 2, "reordered")]:
        rc, report = verify(lines)
        assert rc == 4 and (report["first_broken"]["line"], report["first_broken"]["kind"]) == (line, kind)
    other = tmp_path / "other.pem"
    other.write_bytes(SigningKey.generate().verify_key().pem())
    p = subprocess.run(["fleet-ray", "verify-audit", str(sink), "--public-key", str(other)],  # the installed command
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 4 and "line 1" in p.stdout and "wrong_key" in p.stdout


DRIVER = textwrap.dedent("""
    import json, sys, ray
    from fleet_ray.campaign import Campaign, SigningKey
    address, store, ns, cid, sink, key_file, url, resume = sys.argv[1:9]
    ray.init(address=address, namespace="campaign-resume", logging_level="ERROR", log_to_driver=False)
    targets = [f"{url}/item/{i}" for i in range(24)]
    with Campaign(3, campaign_id=cid, store_url=store, namespace=ns, resume=resume == "1", lease_ttl_s=2, lease_wait_s=30,
                  audit={"sink": sink, "key_file": key_file}, rate_limit={"per_target_rps": 8},
                  placement={"resources": {"camp": 1}}) as c:
        res = c.map_targets(lambda ctx, u: ctx.fetch(u).status_code, targets)
    print(json.dumps({"resumed": sum(r.resumed for r in res), "ok": sum(r.ok for r in res)}))
""")


@pytest.mark.slow
def test_resume_after_driver_sigkill_runs_only_outstanding_targets(ray_cluster, ns, key, tmp_path, target):
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.private_pem())
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    sink, cid = tmp_path / "audit.ndjson", f"resume-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, str(script), ray_cluster.address, REDIS_URL, ns, cid, str(sink), str(key_file), target.url]
    events = EventLog(open_store(REDIS_URL, ns))

    def completed() -> set[str]:
        return {r["payload"]["target"] for r in receipts_in_log(events, cid) if r["kind"] == "campaign.member.complete"}

    first = subprocess.Popen([*argv, "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def progressed() -> bool:
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        return len(completed()) >= 8

    wait_for(progressed, 120, 0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    # Ray reaps the dead driver's member workers (they die with it)
    wait_for(lambda: not [a for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["name"].startswith(f"campaign:{cid}:")], 60, 0.05)
    done_before = completed()
    assert 8 <= len(done_before) < 24
    seen_before = len(target.paths)
    second = subprocess.run([*argv, "1"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    all_targets = {f"{target.url}/item/{i}" for i in range(24)}
    fetched_on_resume = {f"{target.url}{p}" for p in target.paths[seen_before:]}
    assert fetched_on_resume == all_targets - done_before  # only the outstanding ones, each once
    assert len(target.paths[seen_before:]) == len(fetched_on_resume)
    assert summary == {"resumed": len(done_before), "ok": 24}
    complete = [r for r in receipts_in_log(events, cid) if r["kind"] == "campaign.member.complete"]
    assert sorted(r["payload"]["target"] for r in complete) == sorted(all_targets)  # one receipt per target
    report = verify_audit_file(sink, key.verify_key())
    assert report.ok and report.closed, report
    assert verify_audit_log(events, cid, key.verify_key()).receipts == report.receipts


def cookie_site():
    """A loopback site: ``/page`` shows the Cookie header it got and, for a new visitor, sets
    ``visit=<n>`` from script; ``/echo`` answers with the Cookie header it got."""
    from fleet_ray.browser.loopback import SiteServer

    counter = iter(range(1, 1_000_000))

    def handler(path, headers):
        cookie = headers.get("cookie", "")
        if path == "/echo":
            return 200, "text/plain", cookie.encode()
        script = "" if "visit=" in cookie else f"<script>document.cookie='visit={next(counter)}; path=/'</script>"
        return 200, "text/html", f"<title>shop</title><body>{cookie}{script}</body>".encode()

    return SiteServer(handler=handler)


def test_members_open_pages_in_chromium_with_their_identity_proxy_and_cookie_jar(ray_cluster, ns, key, tmp_path):
    from fleet_ray.browser.loopback import AuthProxy

    secret = "pw-" + uuid.uuid4().hex
    site = cookie_site().start()
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
    try:
        # Chromium sends nothing for 127.0.0.1 through a proxy: the proxy maps shop.test to the site
        with AuthProxy("alice", secret, hosts={"shop.test": ("127.0.0.1", site.port)}) as proxy:
            via = f"http://alice:{secret}@127.0.0.1:{proxy.port}"
            members = [
                {"id": "de", "user_agent": ua + " de", "locale": "de-DE", "timezone": "Europe/Berlin",
                 "viewport": (1280, 720), "proxy": via},
                {"id": "jp", "user_agent": ua + " jp", "locale": "ja-JP", "timezone": "Asia/Tokyo",
                 "viewport": (1024, 700), "proxy": via},
            ]
            sink = tmp_path / "audit.ndjson"
            with campaign(ns, key, members=members, audit={"sink": str(sink)}) as c:
                def task(ctx, _):
                    with ctx.page("http://shop.test/page") as page:
                        seen = page.evaluate("() => [navigator.userAgent, navigator.language, "
                                             "Intl.DateTimeFormat().resolvedOptions().timeZone, innerWidth, "
                                             "innerHeight, navigator.webdriver, document.title]")
                        status = ctx.requests[-1].status
                    with ctx.page("http://shop.test/page") as page:  # the same member again: its cookie
                        again = page.inner_text("body")
                    echoed = ctx.fetch("http://shop.test/echo").text  # the page's cookie is in ctx.http's jar
                    return {"seen": seen, "status": status, "again": again, "echoed": echoed}

                res = c.broadcast(task)
                assert all(r.ok for r in res), [r.error for r in res]
                status = c.status().model_dump_json()
                # the pages were guarded requests: the target's breaker counted them with the fetches
                breaker = c.guardrails.breaker_state("shop.test", c.config.breaker)
                assert (breaker.samples, breaker.failures, breaker.tripped) == (6, 0, False)
        de, jp = res[0].value, res[1].value
        assert de["seen"] == [ua + " de", "de-DE", "Europe/Berlin", 1280, 720, False, "shop"]
        assert jp["seen"] == [ua + " jp", "ja-JP", "Asia/Tokyo", 1024, 700, False, "shop"]
        assert de["status"] == 200 and jp["status"] == 200
        # each member has its own jar, kept across its pages and shared with its HTTP client
        assert de["again"].startswith("visit=") and de["again"] == de["echoed"]
        assert jp["again"].startswith("visit=") and jp["again"] != de["again"]
        paths = [r.path for r in proxy.authenticated("alice")]
        assert (paths.count("/page"), paths.count("/echo")) == (4, 2)  # all of it through the member's proxy
        visible = [sink.read_text(), json.dumps([r.model_dump(mode="json") for r in res], default=str), status]
        assert all(secret not in text for text in visible)
    finally:
        site.stop()
