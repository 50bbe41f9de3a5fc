"""Benchmark: crawl a local site with a browser pool vs plain Playwright scripts.

    python -m bench.crawl [--slots 2] [--concurrency 4] [--sections 24] [--per-section 25] [--repeats 1]
                          [--cpu-pinning auto|off] [--trace retry|always|off]
    python -m bench.crawl --site docs [--docs-root /usr/share/doc/python3.11/html] [--memory-pages 2000]

**--site docs** (the real-site mode) crawls a real static site this project did not generate: the
HTML documentation of Python (Debian's ``python3.11-doc``, ~530 pages sharing stylesheets, scripts
and images), served from its directory on 127.0.0.1 by a plain static file server (``Last-Modified``,
conditional requests, keep-alive). Both sides run the same BFS from ``/index.html`` with the same link
filter (same origin, ``.html`` pages, fragments and queries dropped, ``_sources``/``_static``-style
folders skipped) and must find the same pages with the same titles. Competitors, in the same run:

- **playwright-reused** — the strongest plain script: one Chromium, one context, ``slots ×
  concurrency`` pages reused for every URL (one HTTP cache for the whole crawl);
- **playwright-fresh** — the same script with a fresh context per page;
- **fleet-kept** — the browser pool as a crawl would set it: ``sessions: {mode: session,
  tasks_per_session: <concurrency>, max_uses: 200}`` (a session's live context — cookies, storage,
  HTTP cache — serves its tasks as tabs, reused from task to task, and a new identity takes over every
  200 pages), ``pages_per_browser`` 5000, ``max_browser_rss_mb`` 4000 (the 1,500 MiB default
  recycles a Chromium with 4 live tabs every few hundred pages, and a recycle costs the cache), and
  ``--cpu-pinning off`` unless given (a slot pinned to its CPU share idles while the other slot runs
  the tail of a BFS level; CPU shares pay off with fresh contexts, see the README); identities, stealth, client hints on every scope and
  failure artifacts as always;
- **fleet-fresh** — the pool's default policy: a fresh context and identity per page.

``--memory-pages N`` then crawls the site again with the kept pool until N pages are done, and
reports each slot's peak memory per pass (a pass is one whole crawl): flat means no growth per page.

A site of ``1 + sections + sections * per_section`` linked pages (625 by default) is generated and
served on 127.0.0.1 by a separate process. Both crawlers do the same breadth-first crawl, level by
level, extracting each page's title and same-origin links, and must find every page:

- **fleet**: a browser pool of ``--slots`` slots (``browser.page-info``, concurrency ``--concurrency``
  per slot) on a local Ray cluster, items submitted through the fleet client. Each page gets what a
  browser slot always gives it: a fresh context with a generated identity, the stealth init script,
  client hints over CDP and failure artifacts (tracing of retried attempts). With the default
  ``cpu_pinning: auto`` each slot's process tree runs on its own share of the CPUs
  (``slot_cpus`` in the output); ``--cpu-pinning off`` leaves placement to the OS.
- **playwright**: one plain single-process Playwright script, one Chromium, the same total
  concurrency (slots × concurrency), a fresh context per page, Chromium's own defaults, placed
  by the OS as such a script is.

Browser start-up is outside the timed part for both. Peak memory per slot is the slot's whole
process tree (worker + Playwright driver + Chromium) sampled during the crawl, as RSS every 0.5 s
(summed, so pages shared between Chromium's processes count once per process) and as PSS (shared
pages split) every 5 s, as reading PSS costs ~150 ms of CPU per Chromium tree; the competitor's
is its own process plus its driver and Chromium. The last stdout line is one JSON object with
``ratio`` = fleet pages/s ÷ playwright pages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

LOREM = (
    "Fleets of browsers crawl this generated site on loopback. Each page carries a little text, a small "
    "inline style and links to its neighbours so that parsing, layout and link extraction all do real work. "
)


# -- the site ------------------------------------------------------------------------------------------
def site_pages(sections: int, per_section: int) -> dict[str, bytes]:
    pages: dict[str, tuple[str, list[str]]] = {"/": ("Home", [f"/s{i}/" for i in range(sections)])}
    for i in range(sections):
        kids = [f"/s{i}/p{j}" for j in range(per_section)]
        pages[f"/s{i}/"] = (f"Section {i}", ["/", *kids])
        for j in range(per_section):
            sib = [f"/s{i}/p{(j + d) % per_section}" for d in (1, 2, 3)]
            pages[f"/s{i}/p{j}"] = (f"Page {i}-{j}", [f"/s{i}/", *sib])
    out = {}
    for path, (title, links) in pages.items():
        body = "".join(f"<li><a href='{escape(h)}'>{escape(h)}</a></li>" for h in links)
        text = "".join(f"<p>{LOREM}</p>" for _ in range(6))
        out[path] = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}li{margin:.2em}</style></head>"
            f"<body><h1>{escape(title)}</h1>{text}<ul>{body}</ul></body></html>"
        ).encode()
    return out


def serve(port_file: str, sections: int, per_section: int) -> None:
    pages = site_pages(sections, per_section)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            body = pages.get(self.path.split("?", 1)[0])
            status = 200 if body is not None else 404
            body = body or b"<title>404</title>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def _start_server(flags: list[str], what: str) -> tuple[subprocess.Popen, str]:
    """Run this module's server mode (``--serve …`` / ``--serve-docs …``) in a process of its own and
    wait for the port it writes."""
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen([sys.executable, "-m", "bench.crawl", flags[0], str(port_file), *flags[1:]])
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def start_site(sections: int, per_section: int) -> tuple[subprocess.Popen, str]:
    return _start_server(["--serve", "--sections", str(sections), "--per-section", str(per_section)], "site server")


def check(found: dict[str, str], base: str, sections: int, per_section: int) -> None:
    expected = {base + p: t for p, t in _titles(sections, per_section).items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))[:5]
        wrong = [u for u in expected if u in found and found[u] != expected[u]][:5]
        raise AssertionError(f"crawl incomplete: {len(found)}/{len(expected)} pages; missing {missing} wrong {wrong}")


def _titles(sections: int, per_section: int) -> dict[str, str]:
    out = {"/": "Home"}
    for i in range(sections):
        out[f"/s{i}/"] = f"Section {i}"
        for j in range(per_section):
            out[f"/s{i}/p{j}"] = f"Page {i}-{j}"
    return out


# -- the real site: a documentation tree served as files ---------------------------------------------------
DOCS_ROOT = "/usr/share/doc/python3.11/html"
DOCS_START = "/index.html"


def serve_docs(port_file: str, root: str) -> None:
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    class H(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as any real server

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # a browser that closed a connection mid-answer (a page closed while it loaded)

    server = Server(("127.0.0.1", 0), partial(H, directory=root))
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def keep_link(url: str, origin: str) -> str | None:
    """The crawl's link filter (both sides): same origin, HTML pages only, no fragment or query, no
    ``/_name/`` folders (sources, static files, downloads). The URL to visit, or None."""
    from urllib.parse import urldefrag, urlsplit

    url = urldefrag(url)[0].split("?", 1)[0]
    if not url.startswith(origin + "/"):
        return None
    path = urlsplit(url).path
    if "/_" in path or not (path.endswith(".html") or path.endswith("/")):
        return None
    return url


def filtered(links: list[str], origin: str) -> set[str]:
    return {u for u in (keep_link(x, origin) for x in links) if u is not None}


# -- the competitors: plain Playwright scripts -----------------------------------------------------------
LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]'), a => a.href)"


async def plain_crawl(base: str, concurrency: int, start: str = "/", reuse: bool = False,
                      ) -> tuple[dict[str, str], float, tuple[float, float]]:
    """``reuse``: one context and ``concurrency`` pages reused for every URL; else a fresh context
    per page."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-gpu", "--no-first-run", "--disable-quic"],
        )
        sem = asyncio.Semaphore(concurrency)
        found: dict[str, str] = {}
        peak = [0.0, 0.0]
        stop = asyncio.Event()

        async def sample():
            last_pss = 0.0
            while not stop.is_set():
                # this process and its Playwright driver (node → Chromium), not the bench's Ray cluster
                with_pss = time.monotonic() - last_pss >= PSS_EVERY_S
                last_pss = time.monotonic() if with_pss else last_pss
                rss, pss = await asyncio.to_thread(tree_mem_mb, os.getpid(), "node", with_pss)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

        shared = await browser.new_context() if reuse else None
        idle = [await shared.new_page() for _ in range(concurrency)] if reuse else []

        async def visit(url: str) -> set[str]:
            async with sem:
                if reuse:
                    page = idle.pop()
                    try:
                        await page.goto(url)
                        found[url] = await page.title()
                        return filtered(await page.evaluate(LINKS_JS), base)
                    finally:
                        idle.append(page)
                context = await browser.new_context()
                try:
                    page = await context.new_page()
                    await page.goto(url)
                    found[url] = await page.title()
                    return filtered(await page.evaluate(LINKS_JS), base)
                finally:
                    await context.close()

        sampler = asyncio.create_task(sample())
        t0 = time.perf_counter()
        level, seen = [base + start], {base + start}
        while level:
            links = await asyncio.gather(*(visit(u) for u in level))
            level = sorted(set().union(*links) - seen)
            seen.update(level)
        elapsed = time.perf_counter() - t0
        stop.set()
        await sampler
        await browser.close()
    return found, elapsed, (peak[0], peak[1])


PSS_EVERY_S = 5.0  # PSS makes the kernel walk every page table: ~150 ms of CPU per Chromium tree


def tree_mem_mb(pid: int, only_children_named: str | None = None, pss: bool = True) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a process and its descendants (PSS 0.0 unless ``pss``). RSS sums count
    pages shared between Chromium's processes once per process; PSS splits them, so it is the fairer
    total, but it is costly to read: samplers read RSS every 0.5 s and PSS every PSS_EVERY_S."""
    try:
        root = psutil.Process(pid)
        kids = root.children(recursive=False)
        if only_children_named is not None:
            kids = [k for k in kids if only_children_named in k.name()]
        procs = [root]
        for k in kids:
            procs += [k, *k.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0
    rss_total = pss_total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if pss:
                info = p.memory_full_info()
                pss_total += info.pss
            else:
                info = p.memory_info()
            rss_total += info.rss
    return rss_total / 2**20, pss_total / 2**20


# -- the fleet ---------------------------------------------------------------------------------------------
def fleet_crawl(fleet, base: str, slot_pids: list[int], start: str = "/",
                ) -> tuple[dict[str, str], float, tuple[float, float]]:
    found: dict[str, str] = {}
    peak = {pid: (0.0, 0.0) for pid in slot_pids}
    stop = threading.Event()

    def sample() -> None:
        last_pss = 0.0
        while not stop.is_set():
            with_pss = time.monotonic() - last_pss >= PSS_EVERY_S
            last_pss = time.monotonic() if with_pss else last_pss
            for pid in slot_pids:
                rss, pss = tree_mem_mb(pid, pss=with_pss)
                peak[pid] = (max(peak[pid][0], rss), max(peak[pid][1], pss))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    level, seen = [base + start], {base + start}
    while level:
        results = fleet.submit("crawl", level).wait(timeout_s=900)
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} page(s) failed, e.g. {failed[0].error}")
        nxt: set[str] = set()
        for r in results:
            found[keep_link(r.value["url"], base) or r.value["url"]] = r.value["title"]
            nxt.update(filtered(r.value["links"], base))
        level = sorted(nxt - seen)
        seen.update(level)
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return found, elapsed, (max(r for r, _ in peak.values()), max(p for _, p in peak.values()))


def crawl_pool(slots: int, concurrency: int, tmp: Path, trace: str, cpu_pinning: str, kept: bool) -> dict:
    browser: dict = {"artifacts": {"logs_root": str(tmp / "logs"), "trace": trace}, "cpu_pinning": cpu_pinning}
    if kept:  # what a crawl sets: sessions with live contexts, Chromium recycled rarely
        browser["sessions"] = {"mode": "session", "keep_context": True, "tasks_per_session": concurrency,
                               "max_sessions": 2, "max_uses": 200}
        browser["pages_per_browser"] = 5000
        # 4 tabs of a live context hold more than fresh contexts do; a recycle would cost the cache
        browser["max_browser_rss_mb"] = 4000
    return {
        "name": "crawl",
        "automation": "browser.page-info",
        "kind": "browser",
        "slots": slots,
        "concurrency": concurrency,
        "placement": {"resources": {"browser": 1}},
        "health": {"period_s": 2, "timeout_s": 30, "failure_threshold": 5, "start_timeout_s": 300},
        "config": {"same_origin_links": True},
        "browser": browser,
    }


def start_fleet(slots: int, concurrency: int, tmp: Path, trace: str = "retry", cpu_pinning: str = "auto",
                kept: bool = False):
    import ray

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    namespace = f"bench-crawl-{uuid.uuid4().hex[:6]}"
    ray.init(address="local", namespace=namespace, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False, num_cpus=2, resources={"browser": slots})
    sup = start_supervisor(f"sqlite://{tmp}/store.db", namespace=namespace, tick_s=0.05)
    fleet = FleetClient(sup, namespace)
    fleet.apply({"pools": [crawl_pool(slots, concurrency, tmp, trace, cpu_pinning, kept)]})
    st = fleet.wait_ready(300)
    return fleet, [s.pid for s in st.pool("crawl").slots]


def repool(fleet, slots: int, concurrency: int, tmp: Path, trace: str, cpu_pinning: str, kept: bool) -> list[int]:
    """Switch the crawl pool's session policy (its slots are replaced) and wait for the new slots."""
    old = {s.pid for s in fleet.status().pool("crawl").slots}
    fleet.apply({"pools": [crawl_pool(slots, concurrency, tmp, trace, cpu_pinning, kept)]})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        st = fleet.wait_ready(300)
        pids = [s.pid for s in st.pool("crawl").slots]
        if len(pids) == slots and not old & set(pids):
            return pids
        time.sleep(0.5)
    raise RuntimeError("the crawl pool was not replaced within 300 s")


def worker_rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(round(psutil.Process(pid).memory_info().rss / 2**20, 1))
        except psutil.Error:
            out.append(0.0)
    return out


def slot_cpus(pids: list[int]) -> list[list[int]]:
    """The CPUs each slot process may run on (its share when cpu_pinning is auto)."""
    out = []
    for pid in pids:
        try:
            out.append(sorted(os.sched_getaffinity(pid)))
        except OSError:
            out.append([])
    return out


def warm(fleet, base: str, n: int, path: str | None = None) -> None:
    """A few pages through every slot first (identity pools, first contexts), outside the timing."""
    urls = [f"{base}{path}?warm={j}" for j in range(n)] if path else [f"{base}/s0/p{j}" for j in range(n)]
    fleet.submit("crawl", urls).wait(timeout_s=300)


def start_docs_site(root: str) -> tuple[subprocess.Popen, str]:
    if not (Path(root) / "index.html").is_file():
        raise SystemExit(f"no {root}/index.html: install Debian's python3.11-doc (apt-get install -y python3.11-doc) "
                         "or pass --docs-root")
    return _start_server(["--serve-docs", "--docs-root", root], "docs server")


def stop_all(fleet, site: subprocess.Popen) -> None:
    """The fleet, Ray and the site server, whatever state the run ended in."""
    if fleet is not None:
        with contextlib.suppress(Exception):
            fleet.down(timeout_s=30)
    with contextlib.suppress(Exception):
        import ray

        ray.shutdown()
    site.terminate()
    site.wait(10)


def same_pages(found: dict[str, str], reference: dict[str, str], who: str) -> None:
    if found != reference:
        missing = sorted(set(reference) - set(found))[:5]
        extra = sorted(set(found) - set(reference))[:5]
        wrong = [u for u in reference if u in found and found[u] != reference[u]][:5]
        raise AssertionError(f"{who}: {len(found)} pages vs {len(reference)}; missing {missing} extra {extra} wrong {wrong}")


def docs_main(args) -> dict:
    """The real-site mode (see the module docstring)."""
    total = args.slots * args.concurrency
    site, base = start_docs_site(args.docs_root)
    tmp = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    fleet = None
    runs: dict[str, list[float]] = {"playwright_reused": [], "playwright_fresh": [], "fleet_kept": [], "fleet_fresh": []}
    peaks: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    reference: dict[str, str] | None = None

    def record(name: str, found: dict[str, str], dt: float, mem: tuple[float, float]) -> None:
        nonlocal reference
        if reference is None:
            reference = found
            if len(found) < 300:
                raise AssertionError(f"only {len(found)} pages reachable from {DOCS_START}: not the site expected")
        same_pages(found, reference, name)
        runs[name].append(len(found) / dt)
        peaks[name].append(mem)
        print(f"{name:18s} {len(found)} pages in {dt:.1f}s ({len(found) / dt:.2f}/s), peak rss/pss "
              f"{mem[0]:.0f}/{mem[1]:.0f} MiB{' per slot' if name.startswith('fleet') else ''}", file=sys.stderr)

    memory_passes: list[dict] = []
    try:
        fleet, pids = start_fleet(args.slots, args.concurrency, tmp, args.trace, args.cpu_pinning, kept=True)
        warm(fleet, base, total * 2, path=DOCS_START)
        for _ in range(args.repeats):
            record("playwright_reused", *asyncio.run(plain_crawl(base, total, DOCS_START, reuse=True)))
            record("fleet_kept", *fleet_crawl(fleet, base, pids, DOCS_START))
        kept_pids = pids
        worker_before = worker_rss_mb(pids)
        pages_done = 0
        while pages_done < args.memory_pages:
            found, dt, mem = fleet_crawl(fleet, base, pids, DOCS_START)
            same_pages(found, reference, "fleet_kept (memory run)")
            pages_done += len(found)
            memory_passes.append({"pages_done": pages_done, "pages_per_s": round(len(found) / dt, 2),
                                  "peak_rss_mb_per_slot": round(mem[0], 1), "peak_pss_mb_per_slot": round(mem[1], 1)})
            print(f"memory pass: {pages_done} pages, peak rss/pss per slot {mem[0]:.0f}/{mem[1]:.0f} MiB", file=sys.stderr)
        worker_after = worker_rss_mb(pids)
        if not args.skip_fresh:
            pids = repool(fleet, args.slots, args.concurrency, tmp, args.trace, args.cpu_pinning, kept=False)
            warm(fleet, base, total * 2, path=DOCS_START)
            for _ in range(args.repeats):
                record("fleet_fresh", *fleet_crawl(fleet, base, pids, DOCS_START))
                record("playwright_fresh", *asyncio.run(plain_crawl(base, total, DOCS_START, reuse=False)))
    finally:
        stop_all(fleet, site)
    rate = {k: statistics.median(v) for k, v in runs.items() if v}
    return {
        "bench": "crawl",
        "site": "docs",
        "docs_root": args.docs_root,
        "pages": len(reference or {}),
        "slots": args.slots,
        "concurrency_per_slot": args.concurrency,
        "total_concurrency": total,
        "repeats": args.repeats,
        "cpu_pinning": args.cpu_pinning,
        "cpus": os.cpu_count(),
        **{f"{k}_pages_per_s": round(v, 2) for k, v in rate.items()},
        "ratio": round(rate["fleet_kept"] / rate["playwright_reused"], 3),
        **({"fleet_fresh_vs_playwright_reused": round(rate["fleet_fresh"] / rate["playwright_reused"], 3),
            "fleet_fresh_vs_playwright_fresh": round(rate["fleet_fresh"] / rate["playwright_fresh"], 3),
            "fleet_kept_vs_playwright_fresh": round(rate["fleet_kept"] / rate["playwright_fresh"], 3)}
           if "fleet_fresh" in rate else {}),
        **{f"{k}_peak_rss_mb": round(max(r for r, _ in v), 1) for k, v in peaks.items() if v},
        **{f"{k}_peak_pss_mb": round(max(p for _, p in v), 1) for k, v in peaks.items() if v},
        "memory_passes": memory_passes,
        "memory_growth_mb_per_slot": (round(memory_passes[-1]["peak_pss_mb_per_slot"] - memory_passes[0]["peak_pss_mb_per_slot"], 1)
                                      if len(memory_passes) > 1 else None),
        "slot_worker_rss_mb_before_memory_run": worker_before,
        "slot_worker_rss_mb_after_memory_run": worker_after,
        "kept_pool_slots": kept_pids,
        "runs_pages_per_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4, help="pages in flight per slot")
    ap.add_argument("--sections", type=int, default=24)
    ap.add_argument("--per-section", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each crawler (median taken)")
    ap.add_argument("--trace", choices=["retry", "always", "off"], default="retry",
                    help="the pool's artifacts.trace (its default: retry)")
    ap.add_argument("--cpu-pinning", choices=["auto", "off"], default=None,
                    help="the pool's browser.cpu_pinning (its default: auto, each slot on its share of the CPUs); "
                    "the bench's default: auto on the generated site, off on --site docs (kept contexts)")
    ap.add_argument("--site", choices=["generated", "docs"], default="generated",
                    help="generated: the generated site; docs: a real documentation site (see --docs-root)")
    ap.add_argument("--docs-root", default=DOCS_ROOT, help="the real site's directory (--site docs)")
    ap.add_argument("--memory-pages", type=int, default=2000,
                    help="--site docs: pages crawled again with the kept pool to watch its memory (0: none)")
    ap.add_argument("--skip-fresh", action="store_true",
                    help="--site docs: leave out the fresh-context runs (fleet and script; ~4 min each)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--serve-docs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.sections, args.per_section)
        return
    if args.serve_docs:
        serve_docs(args.serve_docs, args.docs_root)
        return
    if args.cpu_pinning is None:
        # fresh contexts (the generated site's pool) gain from CPU shares; kept contexts lose by them:
        # a slot pinned to its share idles while the other's tail of a BFS level runs (see README)
        args.cpu_pinning = "off" if args.site == "docs" else "auto"
    if args.site == "docs":
        print(json.dumps(docs_main(args)))
        return
    total = args.slots * args.concurrency
    site, base = start_site(args.sections, args.per_section)
    tmp = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    fleet = None
    try:
        fleet, pids = start_fleet(args.slots, args.concurrency, tmp, args.trace, args.cpu_pinning)
        warm(fleet, base, total * 2)
        plain_runs, fleet_runs, plain_rss, fleet_rss = [], [], [], []
        worker_before = worker_rss_mb(pids)
        for _ in range(args.repeats):
            found, dt, rss = asyncio.run(plain_crawl(base, total))
            check(found, base, args.sections, args.per_section)
            plain_runs.append(len(found) / dt)
            plain_rss.append(rss)
            print(f"playwright: {len(found)} pages in {dt:.1f}s ({len(found) / dt:.1f}/s), peak rss/pss "
                  f"{rss[0]:.0f}/{rss[1]:.0f} MiB", file=sys.stderr)
            found, dt, rss = fleet_crawl(fleet, base, pids)
            check(found, base, args.sections, args.per_section)
            fleet_runs.append(len(found) / dt)
            fleet_rss.append(rss)
            print(f"fleet:      {len(found)} pages in {dt:.1f}s ({len(found) / dt:.1f}/s), peak rss/pss per slot "
                  f"{rss[0]:.0f}/{rss[1]:.0f} MiB", file=sys.stderr)
        pages = 1 + args.sections + args.sections * args.per_section
        worker_after = worker_rss_mb(pids)
        fleet_rate, plain_rate = statistics.median(fleet_runs), statistics.median(plain_runs)
        result = {
            "bench": "crawl",
            "pages": pages,
            "slots": args.slots,
            "concurrency_per_slot": args.concurrency,
            "total_concurrency": total,
            "repeats": args.repeats,
            "trace": args.trace,
            "cpu_pinning": args.cpu_pinning,
            "slot_cpus": slot_cpus(pids),
            "cpus": os.cpu_count(),
            "fleet_pages_per_s": round(fleet_rate, 2),
            "playwright_pages_per_s": round(plain_rate, 2),
            "ratio": round(fleet_rate / plain_rate, 3),
            "peak_rss_mb_per_slot": round(max(r for r, _ in fleet_rss), 1),
            "peak_pss_mb_per_slot": round(max(p for _, p in fleet_rss), 1),
            "playwright_peak_rss_mb": round(max(r for r, _ in plain_rss), 1),
            "playwright_peak_pss_mb": round(max(p for _, p in plain_rss), 1),
            # the slot processes' own memory (Python, no Chromium) before and after every fleet run:
            # what a leak per page would grow (Chromium itself is recycled every pages_per_browser)
            "slot_worker_rss_mb_before": worker_before,
            "slot_worker_rss_mb_after": worker_after,
            "pages_per_slot": round(pages * args.repeats / args.slots),
            "fleet_runs_pages_per_s": [round(x, 2) for x in fleet_runs],
            "playwright_runs_pages_per_s": [round(x, 2) for x in plain_runs],
        }
    finally:
        stop_all(fleet, site)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
