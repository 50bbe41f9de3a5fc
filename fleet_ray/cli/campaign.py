"""``fleet-ray verify-audit`` and ``fleet-ray breaker status|reset`` (registered by fleet_ray.cli.main).

Exit codes: 0 ok; 4 the audit chain is broken (the first broken line is printed); 1 other errors.
"""

from __future__ import annotations

import argparse
import json

from fleet_ray.redact import redact_url
from fleet_ray.settings import Settings

# fleet_ray.campaign.operator is imported inside the commands that use it: the campaign package
# brings its store backends, signing keys and httpx, which the other CLI commands don't need.

AUDIT_BROKEN = 4


def cmd_verify_audit(args: argparse.Namespace) -> int:
    from fleet_ray.campaign.operator import verify_audit

    report = verify_audit(args.file, args.public_key, args.key_env, args.key_file, args.require_closed)
    if args.json:
        print(report.model_dump_json())
    elif report.ok:
        tail = "" if report.closed else " (no campaign.closed receipt: the campaign did not finish, or lines are missing at the end)"
        print(f"{args.file}: OK — {report.receipts} receipts of campaign {report.campaign_id!r}, "
              f"key {report.key_id}{tail}")
    else:
        b = report.first_broken
        assert b is not None
        print(f"{args.file}: BROKEN at line {b.line}" + (f" (seq {b.seq})" if b.seq is not None else "")
              + f": {b.kind}: {b.reason}")
    return 0 if report.ok else AUDIT_BROKEN


def _store(args: argparse.Namespace) -> str:
    return args.store or Settings().store_url


def cmd_breaker_status(args: argparse.Namespace) -> int:
    from fleet_ray.campaign.operator import breaker_status

    states = breaker_status(_store(args), args.namespace, args.target)
    if args.json:
        print(json.dumps([s.model_dump() for s in states]))
        return 0
    if not states:
        print(f"no breakers in namespace {args.namespace!r} of {redact_url(_store(args))}")
    for s in states:
        state = f"TRIPPED ({s.reason})" if s.tripped else "closed"
        print(f"{s.target}: {state}; window {s.failures}/{s.samples} failures")
    return 0


def cmd_breaker_reset(args: argparse.Namespace) -> int:
    from fleet_ray.campaign.operator import reset_breaker

    before = reset_breaker(_store(args), args.namespace, args.target, args.operator)
    print(f"breaker for {before.target} reset" + (" (it was tripped)" if before.tripped else " (it was not tripped)"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("verify-audit", help="verify a campaign's NDJSON audit chain; names the first broken line")
    v.add_argument("file")
    v.add_argument("--public-key", help="trusted Ed25519 public key file (PEM, or 32 bytes base64/hex)")
    v.add_argument("--key-file", help="or: the signing key file (its public half is used)")
    v.add_argument("--key-env", default="FLEET_AUDIT_KEY", help="or: env var holding the signing key")
    v.add_argument("--require-closed", action="store_true",
                   help="a finished campaign: fail if the chain doesn't end with campaign.closed (lines cut off the end)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_verify_audit)

    b = sub.add_parser("breaker", help="reputation circuit breakers of campaign targets")
    bsub = b.add_subparsers(dest="breaker_command", required=True)
    st = bsub.add_parser("status", help="every breaker (or one target's)")
    st.add_argument("target", nargs="?")
    st.add_argument("--store", help="store URL (default: FLEET_STORE_URL or the embedded store)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_breaker_status)
    rs = bsub.add_parser("reset", help="reopen a tripped breaker (operator only; breakers never heal alone)")
    rs.add_argument("target")
    rs.add_argument("--store", help="store URL (default: FLEET_STORE_URL or the embedded store)")
    rs.add_argument("--operator", help="who resets it (recorded in the event log; default: login name)")
    rs.set_defaults(fn=cmd_breaker_reset)
