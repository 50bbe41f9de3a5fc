"""Verify an audit chain end to end and name its first broken link.

Each line must be a receipt of one campaign, signed by the trusted key, whose signature matches its
content and whose ``seq``/``parent_sig`` continue the line before. The first line that fails any of
these is the broken link; the report says which line (1-based), which ``seq`` and why:

- ``malformed``: not a JSON receipt;
- ``wrong_key``: signed by another key than the trusted one;
- ``bad_signature``: the content was edited after signing;
- ``missing``: receipts are missing before this line (a line was removed);
- ``reordered``: this receipt belongs elsewhere in the chain (lines were moved);
- ``foreign``: a receipt of another campaign;
- ``truncated`` (only with ``require_closed``): the chain does not end with the ``campaign.closed``
  receipt that :meth:`Campaign.destroy` writes, so receipts may be missing at the end.

Receipts missing from the *end* of a file can't be told from a campaign that never finished by the
file alone; ``closed`` says whether the chain ends with ``campaign.closed``, and a verifier of a
finished campaign passes ``require_closed`` to treat a missing one as a broken link.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fleet_ray.campaign.audit import SIGNED_FIELDS, receipts_in_log, signing_bytes
from fleet_ray.campaign.signing import VerifyKey
from fleet_ray.errors import AuditChainBroken
from fleet_ray.observe.events import EventLog


class BrokenLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int
    seq: int | None
    kind: str
    reason: str


class AuditReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    ok: bool
    receipts: int
    campaign_id: str | None = None
    key_id: str
    closed: bool = False
    first_broken: BrokenLink | None = None

    def raise_for_broken(self) -> AuditReport:
        if self.first_broken is not None:
            b = self.first_broken
            raise AuditChainBroken(self.source, b.line, b.reason, b.seq)
        return self


def _parse(raw: str | bytes) -> dict[str, Any] | str:
    try:
        r = json.loads(raw)
    except ValueError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(r, dict):
        return "not a JSON object"
    missing = [f for f in (*SIGNED_FIELDS, "sig") if f not in r]
    if missing:
        return f"not a receipt (missing {', '.join(missing)})"
    if not isinstance(r["seq"], int) or not isinstance(r.get("sig"), str):
        return "not a signed receipt (seq must be an integer and sig a string)"
    return r


def verify_lines(lines: Iterable[str | bytes], key: VerifyKey, source: str = "<lines>",
                 require_closed: bool = False) -> AuditReport:
    numbered = [(n, ln) for n, ln in enumerate(lines) if ln.strip()]  # blank lines keep their numbers
    parsed = [_parse(ln) for _, ln in numbered]
    seq_at = {r["seq"]: i for i, r in enumerate(parsed) if isinstance(r, dict)}
    campaign: str | None = None
    prev_sig = ""
    expected = 0
    good = 0
    last_kind = None

    def broken(i: int, kind: str, reason: str, seq: int | None = None) -> AuditReport:
        return AuditReport(source=source, ok=False, receipts=good, campaign_id=campaign, key_id=key.key_id,
                           first_broken=BrokenLink(line=numbered[i][0] + 1, seq=seq, kind=kind, reason=reason))

    for i, r in enumerate(parsed):
        if isinstance(r, str):
            return broken(i, "malformed", r)
        seq = r["seq"]
        if campaign is None:
            campaign = r["campaign"]
        elif r["campaign"] != campaign:
            return broken(i, "foreign", f"receipt of campaign {r['campaign']!r} in the chain of {campaign!r}", seq)
        if r["key_id"] != key.key_id:
            return broken(i, "wrong_key", f"signed with key {r['key_id']}, not the trusted key {key.key_id}", seq)
        try:
            sig = base64.b64decode(r["sig"], validate=True)
        except (binascii.Error, ValueError):
            return broken(i, "bad_signature", "signature is not base64", seq)
        if not key.verify(sig, signing_bytes(r)):
            return broken(i, "bad_signature", "signature does not match the content (edited after signing)", seq)
        if seq != expected or r["parent_sig"] != prev_sig:
            later = seq_at.get(expected)
            if i == 0 and seq != 0:
                return broken(i, "missing", f"chain starts at seq {seq}, not 0 (receipts removed from the start)", seq)
            if later is not None and later > i:
                return broken(i, "reordered", f"seq {seq} where {expected} was expected; seq {expected} is "
                              f"at line {numbered[later][0] + 1} (lines reordered)", seq)
            if seq > expected:
                return broken(i, "missing", f"seq {seq} follows seq {expected - 1}: "
                              f"{seq - expected} receipt(s) missing (line removed)", seq)
            return broken(i, "reordered", f"seq {seq} where {expected} was expected, or parent_sig does not "
                          "match the line before (lines reordered or duplicated)", seq)
        prev_sig = r["sig"]
        expected = seq + 1
        good += 1
        last_kind = r["kind"]
    if require_closed and last_kind != "campaign.closed":
        end = (numbered[-1][0] + 2) if numbered else 1
        return AuditReport(source=source, ok=False, receipts=good, campaign_id=campaign, key_id=key.key_id,
                           first_broken=BrokenLink(line=end, seq=expected, kind="truncated",
                                                   reason=f"the chain ends at seq {expected - 1} without a "
                                                   "campaign.closed receipt (lines missing at the end)"))
    return AuditReport(source=source, ok=True, receipts=good, campaign_id=campaign, key_id=key.key_id,
                       closed=last_kind == "campaign.closed")


def verify_audit_file(path: str | Path, key: VerifyKey, require_closed: bool = False) -> AuditReport:
    """Verify an NDJSON audit sink; ``report.first_broken`` names the first broken line."""
    with open(path, "rb") as fh:
        return verify_lines(fh.read().splitlines(), key, source=str(path), require_closed=require_closed)


def verify_audit_log(events: EventLog, campaign_id: str, key: VerifyKey, require_closed: bool = False) -> AuditReport:
    """Verify a campaign's receipts in the durable event log (lines are positions in seq order)."""
    lines = [json.dumps(r) for r in receipts_in_log(events, campaign_id)]
    return verify_lines(lines, key, source=f"event log of campaign {campaign_id}", require_closed=require_closed)
