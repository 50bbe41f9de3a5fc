"""The ``fleet-ray`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleet_ray.cli.campaign import register as register_campaign_commands
from fleet_ray.cli.demo import run_demo
from fleet_ray.cli.render import progress_line, render_status
from fleet_ray.errors import FleetError, FleetNotRunning, SpecError, SupervisorRecovering
from fleet_ray.ray_boundary import get
from fleet_ray.redact import install_redaction, redact_text, redact_url
from fleet_ray.settings import Settings
from fleet_ray.spec import environments
from fleet_ray.spec.models import load_spec_file
from fleet_ray.spec.packages import publish
from fleet_ray.store import open_store

# Imported inside the commands that need them, so that the others don't load them: Ray (with
# fleet_ray.client.fleet, fleet_ray.actors and fleet_ray.serve) and httpx (with fleet_ray.client.http).

LOCAL_HEAD_PORT = 6380  # Ray's default 6379 is usually Redis


def _client(args: argparse.Namespace):
    from fleet_ray.client.fleet import connect

    return connect(args.address, args.namespace)


def _api(args: argparse.Namespace):
    """The control-plane API client when an API is running: ``--api-url`` / FLEET_API_URL, else the
    default local port if a fleet-ray API for this namespace answers there; None otherwise."""
    from fleet_ray.client.http import ApiClient, default_api_url, probe, resolve_token

    if getattr(args, "no_api", False):
        return None
    url = getattr(args, "api_url", None)
    if not url:
        url = default_api_url(args.namespace)
        if not probe(url, args.namespace, timeout_s=0.3):
            return None
    return ApiClient(url, resolve_token(getattr(args, "token", None)))


def _control(args: argparse.Namespace):
    return _api(args) or _client(args)


def cmd_demo(args: argparse.Namespace) -> int:
    summary = run_demo(pages=args.pages, slots=args.slots, live=sys.stdout.isatty())
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


def _ray_running(address: str | None) -> bool:
    import ray

    try:
        ray.init(address=address or "auto", namespace="fleet-probe", logging_level="ERROR", log_to_driver=False)
    except ConnectionError:
        return False
    ray.shutdown()
    return True


def cmd_up(args: argparse.Namespace) -> int:
    import ray

    settings = Settings()
    store_url = args.store or settings.store_url
    if not args.address and not _ray_running(None):
        print(f"starting a local Ray head on port {args.port} (dashboard on 127.0.0.1)")
        subprocess.run(
            ["ray", "start", "--head", f"--port={args.port}", "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import init_ray

    init_ray(args.address, args.namespace)
    sup = start_supervisor(store_url, namespace=args.namespace, tick_s=settings.tick_s)
    pid = ray.get(sup.ping.remote())
    print(f"supervisor up (pid {pid}, namespace {args.namespace!r}, store {redact_url(store_url)})")
    if not args.no_serve:
        from fleet_ray.client.http import ensure_token_file
        from fleet_ray.serve.deploy import start_api

        # FLEET_API_TOKEN wins over a file (as the clients' Settings.token() has it); a file, when
        # used, is read on every request, so rotating, emptying or deleting it takes effect at once
        token_file = None if settings.api_token else (settings.api_token_file or ensure_token_file())
        url = start_api(namespace=args.namespace, host=args.api_host, port=args.api_port, token=settings.token(),
                        token_file=token_file, read_auth=settings.api_read_auth,
                        status_ttl_s=settings.api_status_ttl_s)
        where = "FLEET_API_TOKEN" if settings.api_token else token_file
        print(f"API and dashboard on {url}/ (control token in {where})")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    spec = environments.resolve(load_spec_file(args.spec), args.env)
    api = _api(args)
    target = api if api is not None else _client(args)
    if args.env or args.dry_run:  # show what will change before changing it
        current = target.spec()
        current = current.get("spec", current) if api is not None else current
        lines = environments.diff(current, spec)
        print("\n".join(lines) if lines else "no changes")
        if args.dry_run:
            return 0
    summary = target.apply(spec)
    print(json.dumps(summary) if args.json else
          f"applied: added={summary['added']} changed={summary['changed']} removed={summary['removed']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = _control(args).status()
    print(redact_text(st.model_dump_json(indent=2) if args.json else render_status(st)))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    _control(args).scale(args.pool, args.slots)
    print(f"pool {args.pool}: desired slots = {args.slots}")
    return 0


def cmd_recycle(args: argparse.Namespace) -> int:
    r = _control(args).recycle(args.slot)
    print(f"slot {r['slot']} (generation {r['generation']}) will be recycled")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    client = _control(args)
    (client.pause if args.command == "pause" else client.resume)(args.pool)
    print(f"pool {args.pool}: {args.command}d")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    api = _api(args)
    if api is not None:
        api.drain(args.pool)
    else:
        get(_client(args).supervisor.drain.remote(args.pool))
    print(f"pool {args.pool}: draining (paused, slots drain; `fleet-ray resume {args.pool}` brings them back)")
    return 0


def _event_line(e: dict[str, Any]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(e["at"]))
    where = e.get("slot") if e.get("slot") and not e["slot"].endswith(":-1") else e.get("pool") or "-"
    gen = f"g{e['generation']}" if e.get("generation") else ""
    return f"{at}  {e['kind']:<22} {where:<14} {gen:<4} {e.get('message', '')}".rstrip()


def cmd_events(args: argparse.Namespace) -> int:
    show = ((lambda e: print(redact_text(json.dumps(e)), flush=True)) if args.json else
            (lambda e: print(redact_text(_event_line(e)), flush=True)))
    api = _api(args)
    filters = {"kind": args.kind or None, "pool": args.pool, "slot": args.slot}
    if args.follow:
        if api is None:
            raise FleetNotRunning("`events --follow` needs the API: run `fleet-ray up` or set FLEET_API_URL")
        for e in api.follow_events(**filters, backlog=args.backlog, timeout_s=args.timeout):
            show(e)
        return 0
    if api is not None:
        events = api.events(**filters, since=args.since, limit=args.limit)["events"]
    else:
        raw = _client(args).events(limit=200)
        events = [{**e, "at": e["physical"] / 1000} for e in raw
                  if (not args.kind or e["kind"] in args.kind) and (not args.pool or e["pool"] == args.pool)
                  and (not args.slot or e["slot"] == args.slot)][-args.limit:]
    for e in events:
        show(e)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        result = _client(args).down(timeout_s=args.timeout)
        try:
            from fleet_ray.serve.deploy import stop_api

            stop_api(args.namespace)
        except Exception as exc:  # no API deployed, or Serve not running
            logging.getLogger(__name__).debug("no API to stop: %s", exc)
        print(f"fleet down ({result['killed_after_timeout']} slot(s) killed after the drain timeout)")
    except FleetNotRunning as exc:
        print(f"no fleet running: {exc}")
    if args.stop_ray:
        subprocess.run(["ray", "stop"], check=False, stdout=subprocess.DEVNULL)
        print("local Ray stopped")
    return 0


def _read_items(path: str) -> list[Any]:
    lines = sys.stdin if path == "-" else Path(path).open()
    with lines:
        return [json.loads(line) for line in lines if line.strip()]


def cmd_submit(args: argparse.Namespace) -> int:
    items = _read_items(args.items)
    job = _client(args).submit(args.pool, items)
    out = Path(args.out).open("w") if args.out else sys.stdout
    tty = sys.stderr.isatty()
    started = time.monotonic()
    last = 0.0
    try:
        for r in job.results():
            out.write(r.model_dump_json() + "\n")
            now = time.monotonic()
            if tty or now - last > 2 or job.done + job.failed == job.total:
                last = now
                line = progress_line(job.done, job.failed, job.total, now - started)
                print(line, end="\r" if tty else "\n", file=sys.stderr)
    finally:
        if args.out:
            out.close()
    print(file=sys.stderr)
    return 0 if job.failed == 0 else 1


def cmd_publish(args: argparse.Namespace) -> int:
    """Store a wheel in the fleet's store, where every node's slots can get it."""
    store = open_store(args.store or Settings().store_url, args.namespace)
    name, version = publish(store, args.path)
    print(f"published {name}=={version}  (use `package: {name}=={version}` in a pool)")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    client = _client(args)
    action = {"pause": client.pause_rollout, "resume": client.resume_rollout, "rollback": client.rollback}
    r = action[args.action](args.pool)
    print(f"pool {args.pool}: rollout {r['state']}" + (f" ({r['reason']})" if r.get("reason") else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings = Settings()
    p = argparse.ArgumentParser(prog="fleet-ray", description=__doc__)
    p.add_argument("--address", default=settings.ray_address, help="Ray cluster address (default: auto)")
    p.add_argument("--namespace", default=settings.namespace, help="Ray namespace of the fleet")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--api-url", default=settings.api_url,
                   help="control-plane API to talk to (FLEET_API_URL; default: the local API if it runs)")
    p.add_argument("--token", help="API token (prefer FLEET_API_TOKEN / FLEET_API_TOKEN_FILE: flags show in ps)")
    p.add_argument("--no-api", action="store_true", help="talk to the supervisor through Ray, not the API")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run a self-contained demo fleet on this machine")
    d.add_argument("--pages", type=int, default=30)
    d.add_argument("--slots", type=int, default=2)
    d.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    d.set_defaults(fn=cmd_demo)

    u = sub.add_parser("up", help="start (or attach to) Ray and start the supervisor")
    u.add_argument("--store", help="store URL (default: FLEET_STORE_URL or the embedded SQLite store)")
    u.add_argument("--port", type=int, default=LOCAL_HEAD_PORT, help="port of a local Ray head started by up")
    u.add_argument("--api-host", default=settings.api_host, help="address the API binds (default 127.0.0.1)")
    u.add_argument("--api-port", type=int, default=settings.api_port, help="port of the API and dashboard")
    u.add_argument("--no-serve", action="store_true", help="don't start the API and dashboard")
    u.set_defaults(fn=cmd_up)

    a = sub.add_parser("apply", help="validate a spec file and make it the desired state")
    a.add_argument("spec")
    a.add_argument("--env", help="apply this environment's overrides (the spec's `environments` section)")
    a.add_argument("--dry-run", action="store_true", help="only print what would change")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=cmd_apply)

    s = sub.add_parser("status", help="pools and slots")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)

    sc = sub.add_parser("scale", help="set a pool's slot count (an autoscaled pool: its size now, within "
                        "autoscale.min_slots..max_slots; the autoscaler goes on from there after cooldown_s)")
    sc.add_argument("pool")
    sc.add_argument("slots", type=int)
    sc.set_defaults(fn=cmd_scale)

    r = sub.add_parser("recycle", help="replace a slot (pool:index) with a fresh generation")
    r.add_argument("slot")
    r.set_defaults(fn=cmd_recycle)

    for name in ("pause", "resume"):
        x = sub.add_parser(name, help=f"{name} leasing work to a batch pool")
        x.add_argument("pool")
        x.set_defaults(fn=cmd_pause)

    dr = sub.add_parser("drain", help="pause a pool and drain its slots (resume brings them back)")
    dr.add_argument("pool")
    dr.set_defaults(fn=cmd_drain)

    ev = sub.add_parser("events", help="lifecycle events (filter; --follow for a live stream)")
    ev.add_argument("--kind", action="append", help="event kind, repeatable; 'slot.*' matches a prefix")
    ev.add_argument("--pool")
    ev.add_argument("--slot", help="slot position pool:index")
    ev.add_argument("--since", type=float, help="from this time (epoch seconds); reads the durable log")
    ev.add_argument("--limit", type=int, default=50)
    ev.add_argument("--follow", "-f", action="store_true", help="stream new events (needs the API)")
    ev.add_argument("--backlog", type=int, default=20, help="with --follow: recent events shown first")
    ev.add_argument("--timeout", type=float, help="with --follow: stop after this many seconds")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.set_defaults(fn=cmd_events)

    dn = sub.add_parser("down", help="remove every slot and the supervisor")
    dn.add_argument("--timeout", type=float, default=30.0, help="drain timeout before slots are killed")
    dn.add_argument("--stop-ray", action="store_true", help="also stop the local Ray started by `up`")
    dn.set_defaults(fn=cmd_down)

    pb = sub.add_parser("publish", help="build/store an automation wheel for the cluster; prints its version")
    pb.add_argument("path", help="a project directory (built with `python -m build`) or a .whl file")
    pb.add_argument("--store", help="store URL (default: FLEET_STORE_URL or the embedded SQLite store)")
    pb.set_defaults(fn=cmd_publish)

    ro = sub.add_parser("rollout", help="pause, resume or roll back a pool's rollout")
    ro.add_argument("action", choices=["pause", "resume", "rollback"])
    ro.add_argument("pool")
    ro.set_defaults(fn=cmd_rollout)

    sb = sub.add_parser("submit", help="submit JSON lines as batch items; results go to stdout or --out")
    sb.add_argument("pool")
    sb.add_argument("items", help="a .jsonl file (one item per line) or - for stdin")
    sb.add_argument("--out", help="write results (JSON lines) here")
    sb.set_defaults(fn=cmd_submit)

    register_campaign_commands(sub)  # verify-audit, breaker status|reset
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_redaction()  # logs and uncaught exceptions of the CLI, like every fleet-ray process
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.fn(args)
    except SpecError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except FleetNotRunning as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 3
    except SupervisorRecovering as exc:  # nothing changed: the same command may be run again
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    except FleetError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
