"""The signed audit chain: keys, signing under concurrency, tamper detection at the right line, the CLI."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import threading

import pytest

from fleet_ray.campaign.audit import AuditChain, NdjsonSink, receipts_in_log, sync_sink
from fleet_ray.campaign.signing import SigningKey, VerifyKey, load_signing_key, load_verify_key
from fleet_ray.campaign.verify import verify_audit_file, verify_audit_log
from fleet_ray.cli.main import main as cli_main
from fleet_ray.errors import AuditChainBroken, AuditKeyError, CampaignClosed
from fleet_ray.observe.events import EventLog
from fleet_ray.testing import MemoryStore


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def write_chain(path, key, n=6, campaign="c1", events=None) -> AuditChain:
    chain = AuditChain(campaign, key, events, NdjsonSink(path))
    for i in range(n):
        chain.append("campaign.member.complete", {"member": i, "value": i * i})
    chain.close("campaign.closed", {"completed": n})
    return chain


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def rewrite(path, new_lines) -> None:
    path.write_text("\n".join(new_lines) + "\n")


# --- keys ---------------------------------------------------------------------------------------


def test_key_loads_from_pem_base64_and_hex_and_never_shows_itself(key, tmp_path, monkeypatch):
    seed = key._private.private_bytes_raw()
    for material in (key.private_pem().decode(), base64.b64encode(seed).decode(), seed.hex()):
        monkeypatch.setenv("AUDIT_K", material)
        loaded = load_signing_key("AUDIT_K")
        assert loaded.key_id == key.key_id
        assert material not in repr(loaded)
    (tmp_path / "k.pem").write_bytes(key.private_pem())
    assert load_signing_key(key_env="NOPE", key_file=tmp_path / "k.pem").key_id == key.key_id
    with pytest.raises(TypeError):
        pickle.dumps(key)  # the key must never ride along to Ray workers


def test_bad_or_missing_key_is_a_clear_error_without_the_value(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIT_K", "definitely-not-a-key-s3cr3t")
    with pytest.raises(AuditKeyError) as exc:
        load_signing_key("AUDIT_K")
    assert "AUDIT_K" in str(exc.value) and "s3cr3t" not in str(exc.value)
    monkeypatch.delenv("AUDIT_K")
    with pytest.raises(AuditKeyError, match="AUDIT_K"):
        load_signing_key("AUDIT_K")
    with pytest.raises(AuditKeyError, match="can't read key file"):
        load_signing_key(key_file=tmp_path / "missing.pem")


def test_public_key_file_verifies(key, tmp_path):
    (tmp_path / "pub.pem").write_bytes(key.verify_key().pem())
    assert load_verify_key(tmp_path / "pub.pem").key_id == key.key_id


# --- chain --------------------------------------------------------------------------------------


def test_an_untouched_chain_verifies_and_is_closed(key, tmp_path):
    path = tmp_path / "a.ndjson"
    write_chain(path, key)
    report = verify_audit_file(path, key.verify_key())
    assert report.ok and report.receipts == 7 and report.closed and report.campaign_id == "c1"


def test_lines_cut_off_the_end_fail_only_a_verifier_that_requires_a_closed_chain(key, tmp_path, capsys,
                                                                                  monkeypatch):
    path = tmp_path / "cut.ndjson"
    write_chain(path, key)
    assert verify_audit_file(path, key.verify_key(), require_closed=True).ok
    rewrite(path, lines(path)[:4])  # the last three receipts (closed included) removed
    lenient = verify_audit_file(path, key.verify_key())
    assert lenient.ok and not lenient.closed and lenient.receipts == 4
    strict = verify_audit_file(path, key.verify_key(), require_closed=True)
    assert not strict.ok and strict.first_broken.kind == "truncated" and strict.first_broken.line == 5
    assert strict.first_broken.seq == 4 and "ends at seq 3" in strict.first_broken.reason
    monkeypatch.setenv("FLEET_AUDIT_KEY", key.private_pem().decode())
    assert cli_main(["verify-audit", str(path)]) == 0
    assert "no campaign.closed receipt" in capsys.readouterr().out
    assert cli_main(["verify-audit", str(path), "--require-closed"]) == 4
    assert "BROKEN at line 5 (seq 4): truncated" in capsys.readouterr().out


def test_concurrent_appends_stay_one_linear_chain(key, tmp_path):
    path = tmp_path / "c.ndjson"
    chain = AuditChain("c1", key, None, NdjsonSink(path))

    def worker(t):
        for i in range(50):
            chain.append("campaign.request", {"thread": t, "i": i})
            if i % 7 == 0:
                chain.flush()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain.close("campaign.closed", {})
    report = verify_audit_file(path, key.verify_key())
    assert report.ok and report.receipts == 401
    assert [json.loads(x)["seq"] for x in lines(path)] == list(range(401))


def test_nothing_is_written_after_close(key, tmp_path):
    path = tmp_path / "d.ndjson"
    chain = write_chain(path, key, n=2)
    size = path.stat().st_size
    with pytest.raises(CampaignClosed):
        chain.append("campaign.request", {})
    chain.flush()
    assert path.stat().st_size == size


@pytest.mark.parametrize(
    ("tamper", "line", "kind"),
    [
        ("edit", 3, "bad_signature"),
        ("remove", 3, "missing"),
        ("reorder", 3, "reordered"),
        ("garbage", 4, "malformed"),
        ("remove_first", 1, "missing"),
    ],
)
def test_tampering_is_detected_at_the_first_broken_line(key, tmp_path, tamper, line, kind):
    path = tmp_path / "t.ndjson"
    write_chain(path, key)
    ls = lines(path)
    if tamper == "edit":  # line 3 = seq 2: change the payload but keep the signature
        r = json.loads(ls[2])
        r["payload"]["value"] = 999
        ls[2] = json.dumps(r)
    elif tamper == "remove":
        del ls[2]
    elif tamper == "reorder":
        ls[2], ls[3] = ls[3], ls[2]
    elif tamper == "garbage":
        ls[3] = ls[3][:40]
    elif tamper == "remove_first":
        del ls[0]
    rewrite(path, ls)
    report = verify_audit_file(path, key.verify_key())
    assert not report.ok
    assert (report.first_broken.line, report.first_broken.kind) == (line, kind)
    assert report.receipts == line - 1
    with pytest.raises(AuditChainBroken) as exc:
        report.raise_for_broken()
    assert exc.value.line == line


def test_a_chain_signed_with_another_key_fails_on_line_one(key, tmp_path):
    path = tmp_path / "w.ndjson"
    write_chain(path, SigningKey.generate())
    report = verify_audit_file(path, key.verify_key())
    assert (report.first_broken.line, report.first_broken.kind) == (1, "wrong_key")


def test_resigning_an_edit_with_another_key_claiming_the_trusted_id_fails(key, tmp_path):
    from fleet_ray.campaign.audit import signing_bytes

    path = tmp_path / "f.ndjson"
    write_chain(path, key)
    ls = lines(path)
    r = json.loads(ls[1])
    r["payload"]["value"] = 12345
    r["sig"] = base64.b64encode(SigningKey.generate().sign(signing_bytes(r))).decode()
    ls[1] = json.dumps(r)
    rewrite(path, ls)
    assert verify_audit_file(path, key.verify_key()).first_broken.line == 2


def test_torn_last_line_is_repaired_and_the_sink_catches_up_from_the_log(key, tmp_path):
    path = tmp_path / "r.ndjson"
    events = EventLog(MemoryStore())
    write_chain(path, key, n=4, events=events)
    data = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(data[:3]) + data[3][:25])  # crash mid-write of line 4
    sink = NdjsonSink(path)
    assert len(lines(path)) == 3
    assert sync_sink(sink, receipts_in_log(events, "c1"), "c1") == 2
    sink.close()
    assert verify_audit_file(path, key.verify_key()).ok
    assert verify_audit_log(events, "c1", key.verify_key()).receipts == 5


def test_chain_continues_after_a_restart(key, tmp_path):
    events = EventLog(MemoryStore())
    first = AuditChain("c1", key, events, NdjsonSink(tmp_path / "x.ndjson"))
    first.append("campaign.started", {})
    first.append("campaign.member.complete", {"member": 0})
    first.flush()  # …then the driver dies without close()
    second = AuditChain("c1", key, events, NdjsonSink(tmp_path / "x.ndjson"))
    second.continue_from(receipts_in_log(events, "c1")[-1])
    second.append("campaign.resumed", {})
    second.close("campaign.closed", {})
    assert verify_audit_file(tmp_path / "x.ndjson", key.verify_key()).receipts == 4


def test_cli_verify_audit_reports_ok_and_the_broken_line(key, tmp_path, monkeypatch, capsys, caplog):
    path = tmp_path / "cli.ndjson"
    write_chain(path, key)
    monkeypatch.setenv("FLEET_AUDIT_KEY", key.private_pem().decode())
    caplog.set_level(logging.DEBUG)
    assert cli_main(["verify-audit", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    ls = lines(path)
    del ls[4]
    rewrite(path, ls)
    assert cli_main(["verify-audit", str(path)]) == 4
    out = capsys.readouterr().out
    assert "line 5" in out and "missing" in out
    (tmp_path / "pub.pem").write_bytes(SigningKey.generate().verify_key().pem())
    assert cli_main(["verify-audit", str(path), "--public-key", str(tmp_path / "pub.pem"), "--json"]) == 4
    assert json.loads(capsys.readouterr().out)["first_broken"]["kind"] == "wrong_key"
    secret = key.private_pem().decode()
    assert secret not in caplog.text


def test_verify_key_rejects_a_non_key(tmp_path):
    (tmp_path / "pub").write_text("hello")
    with pytest.raises(AuditKeyError, match="not an Ed25519 public key"):
        VerifyKey.from_file(tmp_path / "pub")
