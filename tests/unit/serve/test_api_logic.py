"""Pure parts of the control plane: redaction, error grouping, event cursors, the token check, the live
event follower, the metrics sampler and the HTTP client's error mapping. No Ray, no network."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import httpx
import pytest

from fleet_ray.client.http import ApiClient, ApiRequestError
from fleet_ray.errors import FleetNotRunning, SpecError, UnknownPool, UnknownSlot
from fleet_ray.observe.grouping import group_events, message_signature
from fleet_ray.redact import MASK, redact_json_bytes, redact_tree, redact_url
from fleet_ray.serve.auth import ApiConfig, TokenCheck, token_digest
from fleet_ray.serve.events import BadCursor, event_out, follow, format_cursor, parse_cursor
from fleet_ray.settings import Settings
from fleet_ray.testing import FakeClock


# -- redaction -------------------------------------------------------------------------------------
def test_redact_tree_masks_secret_keys_and_url_credentials():
    found: list[str] = []
    spec = {"pools": [{"name": "web", "config": {"proxy_password": "hunter2", "api_key": "k-123", "timeout": 5,
                                                  "upstream": "http://bob:s3cret@10.0.0.1:8080/x",
                                                  "token_refresh": True, "auth": {"user": "u"},
                                                  "proxies": [{"url": "http://p:1", "username": "zone-7"}],
                                                  "user_agent": "Mozilla/5.0", "users": 3, "proxyUser": "z",
                                                  "user_name": "n"}}]}
    out = redact_tree(spec, "", found)
    cfg = out["pools"][0]["config"]
    assert cfg["proxy_password"] == MASK and cfg["api_key"] == MASK and cfg["timeout"] == 5
    assert cfg["upstream"] == "http://***@10.0.0.1:8080/x"
    assert cfg["token_refresh"] is True and cfg["auth"] == {"user": MASK}  # booleans and subtrees stay readable
    assert cfg["proxies"] == [{"url": "http://p:1", "username": MASK}]
    assert cfg["user_agent"] == "Mozilla/5.0" and cfg["users"] == 3
    assert cfg["proxyUser"] == MASK and cfg["user_name"] == MASK
    assert found == ["pools[0].config.proxy_password", "pools[0].config.api_key", "pools[0].config.auth.user",
                     "pools[0].config.proxies[0].username", "pools[0].config.proxyUser", "pools[0].config.user_name"]
    assert spec["pools"][0]["config"]["proxy_password"] == "hunter2"  # input untouched


def test_redact_json_bytes():
    body = b'{"store":"redis://:pw@h:6379/0","x":"https://a:b@c/d","y":"no creds http://h/p"}'
    assert redact_json_bytes(body) == b'{"store":"redis://***@h:6379/0","x":"https://***@c/d","y":"no creds http://h/p"}'


def test_redact_url_in_free_text_and_in_json_stop_at_different_places():
    assert redact_url("redis://:pw@h:6379/0 and http://a:b@c/d") == "redis://***@h:6379/0 and http://***@c/d"
    assert redact_url("http://h/p?u=a@b") == "http://h/p?u=a@b"  # an '@' after the path is no user-info
    # in serialised JSON a quote ends the string: the match never runs into the next value
    assert redact_json_bytes(b'["http://x","a@b"]') == b'["http://x","a@b"]'
    assert redact_url('["http://x","a@b"]') == '["http://***@b"]'


# -- grouping --------------------------------------------------------------------------------------
def ev(kind, msg, slot="web:0", physical=1_000_000, pool="web"):
    return {"id": f"{kind}{slot}{physical}", "kind": kind, "message": msg, "pool": pool, "slot": slot,
            "physical": physical, "counter": 0}


def test_signature_masks_numbers_ids_and_quoted_values():
    a = message_signature("died: worker 12345 exited (node 9f8e7d6c5b4a3f2e) 'boom'")
    b = message_signature("died: worker 777 exited (node 0011223344556677) 'other'")
    assert a == b == "died: worker <n> exited (node <id>) <str>"


def test_group_events_groups_alike_failures_newest_group_first():
    events = [
        ev("slot.died", "died: pid 11 killed", "web:0", 1_000),
        ev("slot.died", "died: pid 12 killed", "web:1", 2_000),
        ev("slot.start_failed", "setup raised ValueError('x')", "api:0", 3_000, pool="api"),
        ev("slot.ready", "pid 13 on node abc", "web:0", 4_000),  # not a failure
        ev("slot.died", "died: pid 14 killed", "web:0", 5_000),
    ]
    groups = group_events(events)
    assert [g.kind for g in groups] == ["slot.died", "slot.start_failed"]
    died = groups[0]
    assert died.count == 3 and died.slots == ["web:0", "web:1"] and died.pools == ["web"]
    assert died.first_seen == 1.0 and died.last_seen == 5.0 and died.sample == "died: pid 14 killed"


# -- cursors & events ------------------------------------------------------------------------------
def test_cursor_round_trip_and_errors():
    e = {"physical": 1_700_000_000_123, "counter": 4, "id": "abc-def"}
    assert parse_cursor(format_cursor(e)) == (1_700_000_000_123, 4, "abc-def")
    for bad in ["", "x-1-a", "1-x-a", "12", "9" * 30 + "-0-a"]:
        with pytest.raises(BadCursor):
            parse_cursor(bad)


def test_event_out_redacts_message_and_data():
    out = event_out({"id": "i", "kind": "slot.died", "physical": 1500, "counter": 2, "origin": "supervisor",
                     "pool": "web", "slot": "web:0", "generation": 3,
                     "message": "redis://u:pw@h unreachable", "data": {"password": "pw", "n": 1}})
    assert out["message"] == "redis://***@h unreachable" and out["data"] == {"password": MASK, "n": 1}
    assert out["at"] == 1.5 and out["cursor"] == "1500-2-i"


# -- the token check -------------------------------------------------------------------------------
def test_token_check(tmp_path):
    check = TokenCheck(ApiConfig(token_sha256=token_digest("s3cret")))
    assert check.configured
    assert check.check("Bearer s3cret") and check.check("bearer  s3cret ")
    for bad in [None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"]:
        assert not check.check(bad), bad
    assert not TokenCheck(ApiConfig()).configured and not TokenCheck(ApiConfig()).check("Bearer anything")


def test_token_file_is_reread_when_it_changes(tmp_path):
    f = tmp_path / "token"
    f.write_text("first\n")
    check = TokenCheck(ApiConfig(token_sha256=token_digest("first"), token_file=str(f)))
    assert check.check("Bearer first")
    f.write_text("second\n")
    os.utime(f, (1, 1))  # a different mtime, whatever the clock resolution
    assert check.check("Bearer second") and not check.check("Bearer first")


def test_a_rotation_that_keeps_the_mtime_is_seen(tmp_path):
    f = tmp_path / "token"
    f.write_text("first\n")
    os.utime(f, (5, 5))
    check = TokenCheck(ApiConfig(token_sha256=token_digest("first"), token_file=str(f)))
    assert check.check("Bearer first")
    f.write_text("other\n")
    os.utime(f, (5, 5))  # same mtime (and size) as before
    assert check.check("Bearer other") and not check.check("Bearer first")


@pytest.mark.parametrize("revoke", ["delete", "empty", "blank"])
def test_deleting_or_emptying_the_token_file_revokes_the_token(tmp_path, revoke):
    f = tmp_path / "token"
    f.write_text("s3cret\n")
    check = TokenCheck(ApiConfig(token_sha256=token_digest("s3cret"), token_file=str(f)))
    assert check.check("Bearer s3cret") and check.configured
    if revoke == "delete":
        f.unlink()
    else:
        f.write_text("" if revoke == "empty" else "  \n\n")
    assert not check.check("Bearer s3cret") and not check.configured  # fail closed
    f.write_text("fresh\n")
    assert check.check("Bearer fresh") and not check.check("Bearer s3cret")


def test_token_file_is_the_source_of_truth_over_the_start_digest(tmp_path):
    check = TokenCheck(ApiConfig(token_sha256=token_digest("old"), token_file=str(tmp_path / "absent")))
    assert not check.configured and not check.check("Bearer old")


def test_settings_token_reads_the_file_each_time(tmp_path):
    f = tmp_path / "token"
    f.write_text("one\n")
    s = Settings(api_token_file=f)
    assert s.token() == "one"
    f.write_text("two\n")
    assert s.token() == "two"
    f.unlink()
    assert s.token() is None
    f.write_text("\n")
    assert s.token() is None
    assert Settings(api_token=" t ").token() == "t" and Settings(api_token="").token() is None


def test_api_config_has_no_secret_field():
    fields = set(ApiConfig.model_fields)
    assert "token" not in fields and "token_sha256" in fields


# -- following events ------------------------------------------------------------------------------
def test_follow_sends_backlog_then_only_new_events_and_skips_unmatched():
    clock = FakeClock(0)
    log = [ev("slot.ready", f"m{i}", physical=1000 + i) for i in range(5)]
    calls: list[dict] = []

    async def fetch(**kw):
        calls.append(kw)
        after = tuple(kw["after"]) if kw.get("after") else None
        events = [e for e in log if after is None or (e["physical"], e["counter"], e["id"]) > after]
        events = events[: kw["limit"]] if after else events[-kw["limit"]:]
        newest = [log[-1]["physical"], 0, log[-1]["id"]]
        return {"events": events, "source": "memory", "newest": newest}

    async def sleep_and_grow():
        clock.advance(1)
        log.append(ev("slot.died", "new", physical=2000 + len(log)))

    async def run():
        frames = []
        async def disconnected():
            await sleep_and_grow()
            return len(frames) > 5

        gen = follow(fetch, {"slot": "web:0"}, None, 2, 0.0, 100.0, None, disconnected, clock)
        async for frame in gen:
            frames.append(frame)
        return frames

    frames = asyncio.run(run())
    assert frames[0].startswith("retry: 3000")
    data = [f for f in frames if f.startswith("id:")]
    assert "m3" in data[0] and "m4" in data[1]  # backlog of 2, oldest first
    assert all('"kind":"slot.died"' in f for f in data[2:]) and len(data) >= 4
    ids = [f.split("\n")[0] for f in data]
    assert len(ids) == len(set(ids))  # nothing twice
    assert all(c.get("slot") == "web:0" for c in calls[1:])


# -- metrics sampling ------------------------------------------------------------------------------
@dataclass
class Rec:
    pool: str
    index: int
    generation: int
    state: str
    tasks: int


@dataclass
class Ev:
    kind: str
    pool: str
    physical: int
    counter: int = 0


def test_sampler_counts_task_deltas_across_generations_and_events_once():
    from fleet_ray.actors.metrics import Sampler

    s = Sampler(period_s=1.0)
    recs = [Rec("web", 0, 1, "running", 10), Rec("web", 1, 1, "running", 5)]
    first = s.sample(100.0, recs, {"web": 2}, [])
    assert first.pools["web"].counts == {"running": 2} and first.dt == 0
    assert not s.due(100.5) and s.due(101.0)
    recs = [Rec("web", 0, 1, "running", 16), Rec("web", 1, 2, "starting", 3)]  # web:1 replaced
    events = [Ev("slot.died", "web", 1), Ev("slot.recycled", "web", 2), Ev("slot.heal_escalated", "web", 3)]
    second = s.sample(102.0, recs, {"web": 2}, events)
    web = second.pools["web"]
    assert web.tasks == 6 + 3 and web.failures == {"slot.died": 1} and web.recycles == 1 and web.escalations == 1
    assert web.counts == {"running": 1, "starting": 1}
    third = s.sample(103.0, recs, {"web": 2}, events)  # the same events are not counted again
    assert third.pools["web"].failures == {} and third.pools["web"].tasks == 0
    series = s.series()
    assert series["period_s"] == 1.0
    points = series["pools"][0]["points"]
    assert [p["tasks_per_s"] for p in points] == [4.5, 0.0] and points[0]["failures_per_s"] == 0.5


# -- HTTP client error mapping ---------------------------------------------------------------------
def _client_with(status: int, body: dict) -> ApiClient:
    transport = httpx.MockTransport(lambda req: httpx.Response(status, json=body))
    c = ApiClient("http://api.invalid")
    c._http = httpx.Client(base_url=c.url, transport=transport)
    return c


def test_api_client_maps_error_codes_to_library_errors():
    def err(code, message, details=()):
        return {"error": {"code": code, "message": message, "details": list(details)}}

    with pytest.raises(SpecError) as e:
        _client_with(422, err("invalid_spec", "bad", [{"loc": "pools.web.slots", "msg": "≥ 0"}])).apply({})
    assert e.value.fields == ["pools.web.slots"]
    with pytest.raises(UnknownPool):
        _client_with(404, err("not_found", "no pool named 'x'")).scale("x", 1)
    with pytest.raises(UnknownSlot):
        _client_with(404, err("not_found", "no slot 'web:9' (slot ids look like 'pool:index')")).recycle("web:9")
    with pytest.raises(FleetNotRunning):
        _client_with(503, err("unavailable", "no supervisor")).status()
    with pytest.raises(ApiRequestError) as e:
        _client_with(401, err("unauthorized", "wrong token")).drain("web")
    assert e.value.status == 401 and e.value.code == "unauthorized" and "wrong token" in str(e.value)


# -- the OpenAPI document --------------------------------------------------------------------------
def test_openapi_document_describes_every_endpoint_and_forbids_extra_fields():
    from fleet_ray.serve.app import create_app

    doc = create_app(ApiConfig(token_sha256=token_digest("t"))).openapi()
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        if name in ("HTTPValidationError", "ValidationError") or "properties" not in schema:
            continue
        assert schema.get("additionalProperties") is False, name
        for field, prop in schema["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), (method, path)
            if method == "post":  # every control endpoint is guarded and says so
                assert op["security"] == [{"HTTPBearer": []}] and "401" in op["responses"], path


def test_the_supervisors_groups_and_the_event_groups_are_one_model_and_the_api_shape_is_pinned():
    from fleet_ray.api.models import ERRORS_EXCLUDE, ErrorGroup, ErrorGroups
    from fleet_ray.observe.grouping import ErrorGrouper, FailureRecord, newest_first

    grouper = ErrorGrouper()
    for slot, at in [("web:1", 10.0), ("web:0", 20.0)]:
        grouper.add(FailureRecord(kind="task", error_type="TimeoutError", frame="shop.fetch:42", pool="web", slot=slot,
                                  phase="load", message="GET http://u:pw@shop/x timed out", at=at))
    g = grouper.groups()[0]
    assert g.key == "TimeoutError @ shop.fetch:42" and g.signature == "TimeoutError at shop.fetch:42"
    assert g.kind == "task" and g.kinds == ["task"] and g.slots == ["web:0", "web:1"] and g.phases == ["load"]
    assert g.count == 2 and (g.first_seen, g.last_seen) == (10.0, 20.0) and g.sample == "GET http://***@shop/x timed out"
    died = group_events([ev("slot.died", "died: pid 7", "web:0", 30_000)])[0]
    assert died.key == "slot.died|died: pid <n>" and died.error_type is None and died.kinds == ["slot.died"]
    from_ray = [ErrorGroup.model_validate(d) for d in grouper.dump()]  # what Supervisor.error_groups returns
    merged = newest_first([died], from_ray)
    assert [m.kind for m in merged] == ["slot.died", "task"]
    api = ErrorGroups(groups=merged, source="s").model_dump(mode="json", exclude=ERRORS_EXCLUDE)
    assert list(api["groups"][1]) == ["key", "kind", "signature", "sample", "count", "pools", "slots", "first_seen",
                                      "last_seen", "error_type", "frame", "phases"]


def test_event_views_are_the_envelope_or_a_projection_of_it():
    from fleet_ray.api.models import EventOut
    from fleet_ray.api.status import EventStatus
    from fleet_ray.observe.envelope import Event

    assert set(EventOut.model_fields) == set(Event.model_fields) | {"at", "cursor"} and issubclass(EventOut, Event)
    assert set(EventStatus.model_fields) <= set(Event.model_fields) | {"at"}
    for name, f in EventStatus.model_fields.items():
        assert name == "at" or f.annotation == Event.model_fields[name].annotation, name
    e = Event(kind="slot.died", physical=2500, pool="web", slot="web:0", generation=2, message="m", data={"x": 1})
    assert EventStatus.from_event(e).model_dump() == {"kind": "slot.died", "at": 2.5, "pool": "web", "slot": "web:0",
                                                      "generation": 2, "message": "m"}
    assert EventOut.from_event(e, "c").to_entry() == e.to_entry()  # the log never gets the API's extras


def test_browser_slot_status_from_a_health_snapshot():
    from fleet_ray.api.status import BrowserSlotStatus, SlotStatus

    snap = {"browser": {"version": "156.0", "launches": 3, "pages_since_launch": 2, "pages": 42,
                        "recycles": {"pages": 2}, "crashes": 1, "retiring": False},
            "browser_rss_mb": 312.4,
            "proxies": [{"id": "p0", "proxy": "http://10.0.0.5:3128", "country": "DE", "health": "quarantined",
                         "uses": 9, "successes": 7, "failures": 2, "last_outcome": "proxy_auth"}],
            "sessions": {"mode": "session", "live": 2, "retired": 5}, "counters": {"ok": 40},
            "in_flight": {"t1": "goto"}, "artifacts_saved": 0,
            "cpu": {"cpus": [2, 3], "host_cpus": 8, "browser_slots": 4, "problem": None}}
    b = BrowserSlotStatus.from_health(snap)
    assert (b.chromium, b.launches, b.pages, b.crashes, b.recycles, b.in_flight) == ("156.0", 3, 42, 1, {"pages": 2}, 1)
    assert b.proxies[0].health == "quarantined" and b.sessions_live == 2 and b.sessions_retired == 5
    assert b.cpus == [2, 3]
    assert BrowserSlotStatus.from_health({k: v for k, v in snap.items() if k != "cpu"}).cpus is None  # not pinned
    slot = SlotStatus(id="b:0", pool="b", index=0, generation=1, state="running", actor="fleet:b:0:g1", browser=b)
    assert SlotStatus.model_validate_json(slot.model_dump_json()) == slot
    # the CLI's status shows the browser line, credentials-free, with the slot's CPUs
    from fleet_ray.api.status import FleetStatus, PoolStatus
    from fleet_ray.cli.render import render_status

    pool = PoolStatus(name="b", automation="browser.page-info", kind="browser", batch=True, desired=1, state="ok",
                      slots=[slot])
    fleet = FleetStatus(fleet="f", namespace="ns", supervisor_pid=1, supervisor_started=0.0, store="sqlite://x",
                        store_degraded=False, last_step_ms=1.0, steps=1, pools=[pool])
    line = next(x for x in render_status(fleet).splitlines() if "browser:" in x)
    assert "pages=42 launches=3 crashes=1 chromium_rss=312MB cpus=2,3  proxies: p0 quarantined" in line
