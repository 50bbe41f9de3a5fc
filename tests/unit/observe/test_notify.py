"""What the notifier sends when (pure: a fake clock, notifiers that record or fail)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_ray.errors import NotifyError
from fleet_ray.observe.grouping import ErrorGrouper, FailureRecord
from fleet_ray.observe.notify import NotifyConfig, Reporter, TelegramNotifier, config_from_env
from fleet_ray.testing import FakeClock


class Recorder:
    name = "recorder"

    def __init__(self, fail: bool = False):
        self.sent = []
        self.fail = fail

    def send(self, n):
        if self.fail:
            raise NotifyError("recorder: HTTP 500")
        self.sent.append(n)


def failure(slot: str, at: float, frame: str = "acme.parse:3", error_type: str = "ValueError") -> FailureRecord:
    return FailureRecord(error_type=error_type, frame=frame, message="bad price", pool="web", slot=slot,
                         phase="parse", at=at)


def setup(**cfg):
    clock = FakeClock(1000.0)
    rec = Recorder()
    rep = Reporter(NotifyConfig(window_s=2, digest_s=60, **cfg), notifiers=[rec], clock=clock, start=False)
    return clock, rec, rep, ErrorGrouper()


def test_ten_slots_failing_alike_send_one_message_naming_all_of_them():
    clock, rec, rep, groups = setup()
    for i in range(10):
        rep.report(groups.add(failure(f"web:{i}", clock.now))[0])
        clock.advance(0.1)
    assert rep.tick() == [] and rec.sent == []  # still gathering alike failures
    clock.advance(2)
    rep.tick()
    clock.advance(5)
    rep.tick()
    assert len(rec.sent) == 1
    msg = rec.sent[0]
    assert msg.kind == "new" and "10 failure(s)" in msg.text and "web:0" in msg.text and "web:9" in msg.text
    assert "ValueError @ acme.parse:3" in msg.text and "parse" in msg.text


def test_repeats_go_out_as_one_digest_per_period():
    clock, rec, rep, groups = setup()
    rep.report(groups.add(failure("web:0", clock.now))[0])
    clock.advance(3)
    rep.tick()
    for i in range(5):
        rep.report(groups.add(failure(f"web:{i}", clock.now))[0])
    clock.advance(10)
    rep.tick()
    assert [m.kind for m in rec.sent] == ["new"]
    clock.advance(60)
    rep.tick()
    assert [m.kind for m in rec.sent] == ["new", "digest"] and "(+5 since last message)" in rec.sent[1].text
    clock.advance(60)
    rep.tick()
    assert len(rec.sent) == 2  # nothing new: no digest


def test_many_new_groups_at_once_become_one_storm_message():
    clock, rec, rep, groups = setup(storm_groups=3)
    for i in range(8):
        rep.report(groups.add(failure(f"web:{i}", clock.now, frame=f"acme.step{i}:1"))[0])
    clock.advance(3)
    rep.tick()
    assert [m.kind for m in rec.sent] == ["storm"] and len(rec.sent[0].groups) == 8


def test_messages_are_rate_limited():
    clock, rec, rep, groups = setup(storm_groups=100, max_per_minute=2)
    for i in range(3):
        rep.report(groups.add(failure("web:0", clock.now, frame=f"acme.f{i}:1"))[0])
    clock.advance(3)
    rep.tick()
    assert len(rec.sent) == 2
    clock.advance(61)
    rep.tick()
    assert len(rec.sent) == 3


def test_a_failing_notifier_never_raises_into_the_fleet():
    clock = FakeClock(1000.0)
    bad, good = Recorder(fail=True), Recorder()
    rep = Reporter(NotifyConfig(window_s=0), notifiers=[bad, good], clock=clock, start=False)
    rep.report(ErrorGrouper().add(failure("web:0", clock.now))[0])
    rep.tick()  # does not raise
    assert rep.failures == 1 and len(good.sent) == 1


def test_config_from_the_environment_and_its_summary_hide_secrets():
    cfg = config_from_env({"FLEET_NOTIFY_TELEGRAM_TOKEN": "123:SECRET", "FLEET_NOTIFY_TELEGRAM_CHAT_ID": "42",
                           "FLEET_NOTIFY_WEBHOOK_URL": "https://hooks.example/T0/B0/abcsecret",
                           "FLEET_NOTIFY_DIGEST_S": "30"})
    assert cfg.digest_s == 30 and cfg.telegram_token.get_secret_value() == "123:SECRET"
    shown = str(cfg.summary()) + repr(cfg)
    assert "SECRET" not in shown and "abcsecret" not in shown
    assert "SECRET" not in TelegramNotifier(cfg.telegram_token, "42").name
    with pytest.raises(ValidationError):
        config_from_env({"FLEET_NOTIFY_DIGEST_S": "-1"})
