"""Plain-text rendering for the CLI: status tables and a progress line."""

from __future__ import annotations

from fleet_ray.api.status import AutoscaleStatus, FleetStatus


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _uptime(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _autoscale(a: AutoscaleStatus) -> str:
    """The pool line's autoscale part: bounds, ready of desired, what the signal wants, what holds it."""
    wanted = "-" if a.wanted is None else str(a.wanted)
    signal = "" if a.reading is None else f" {a.signal.split(' ')[0]}={a.reading:g}"
    return (f"  autoscale {a.min_slots}..{a.max_slots} ready={a.current}/{a.desired} wanted={wanted}"
            + (f" pending={a.pending}" if a.pending else "") + signal
            + (f" [held: {a.held_by}]" if a.held_by else ""))


def render_status(st: FleetStatus) -> str:
    lines = [
        f"fleet {st.fleet!r}  supervisor pid {st.supervisor_pid}  store {st.store}"
        + ("  [STORE DEGRADED]" if st.store_degraded else "")
        + f"  step {st.last_step_ms:.1f} ms"
    ]
    if not st.pools:
        lines.append("no pools (apply a spec with `fleet-ray apply SPEC`)")
    for p in st.pools:
        counts = " ".join(f"{k}={v}" for k, v in sorted(p.counts.items()))
        lines.append(
            f"\npool {p.name}  [{p.state}]  {p.automation}{(' ' + p.version) if p.version else ''}  "
            f"{p.kind}{' batch' if p.batch else ''}  desired={p.desired}  {counts}"
            + ("  paused" if p.paused else "")
            + (_autoscale(p.autoscale) if p.autoscale else "")
            + (f"\n  reason: {p.reason}" if p.reason else "")
            + (f"\n  autoscale: {p.autoscale.reason}" if p.autoscale and p.autoscale.reason else "")
        )
        rows = [["SLOT", "STATE", "GEN", "NODE", "PID", "UPTIME", "TASKS", "RECYCLES", "RSS MB", "PHASE/REASON"]]
        for s in p.slots:
            rows.append(
                [
                    s.id,
                    s.state,
                    str(s.generation),
                    s.node_id[:8] or "-",
                    str(s.pid or "-"),
                    _uptime(s.uptime_s),
                    str(s.tasks),
                    str(s.recycles),
                    f"{s.rss_mb:.0f}",
                    # an unreachable slot's last phase is stale: say why it is unreachable, and since when
                    (f"for {_uptime(s.unreachable_s)}: {s.reason}" if s.state == "unreachable"
                     else s.phase or s.reason or "")[:60],
                ]
            )
        lines.append(_table(rows))
        for s in p.slots:
            if s.concurrency is not None:
                c = s.concurrency
                lines.append(f"  {s.id} concurrency={c.current} ({c.min}..{c.max}) in_flight={c.in_flight}: "
                             f"{c.reason}"[:160])
            if s.browser is not None:
                b = s.browser
                proxies = ", ".join(f"{x.id} {x.health}" for x in b.proxies)
                lines.append(f"  {s.id} browser: pages={b.pages} launches={b.launches} crashes={b.crashes} "
                             f"chromium_rss={b.rss_mb:.0f}MB" + (f" cpus={','.join(map(str, b.cpus))}" if b.cpus else "")
                             + (f"  proxies: {proxies}" if proxies else ""))
    return "\n".join(lines)


def progress_line(done: int, failed: int, total: int, elapsed_s: float, width: int = 30) -> str:
    finished = done + failed
    frac = finished / total if total else 1.0
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    rate = finished / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - finished) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
    return f"[{bar}] {finished}/{total} done={done} failed={failed} {rate:.1f}/s ETA {eta_text}"
