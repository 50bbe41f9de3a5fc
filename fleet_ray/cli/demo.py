"""``fleet-ray demo``: a whole fleet on one laptop, with no Redis and no internet.

It serves :class:`~fleet_ray.builtins.demo.DemoSite` on loopback, starts a local Ray cluster and the
supervisor on the embedded store, crawls the site with ``demo.fetch-title`` slots next to a
``demo.heartbeat`` slot, prints status, and tears everything down.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from fleet_ray.builtins.demo import DemoSite
from fleet_ray.cli.render import progress_line, render_status


def demo_spec(site_url: str, slots: int = 2) -> dict[str, Any]:
    return {
        "name": "demo",
        "pools": [
            {
                "name": "titles",
                "automation": "demo.fetch-title",
                "slots": slots,
                "concurrency": 4,
                "config": {"timeout_s": 5},
                "health": {"period_s": 1, "timeout_s": 5},
            },
            {
                "name": "heartbeat",
                "automation": "demo.heartbeat",
                "slots": 1,
                "config": {"url": site_url + "/", "every_s": 0.5},
                "health": {"period_s": 1, "timeout_s": 5},
            },
        ],
    }


def run_demo(pages: int = 30, slots: int = 2, out=print, live: bool = True) -> dict[str, Any]:
    """Run the demo end to end; returns a summary (pages crawled, failures, titles seen)."""
    import ray

    from fleet_ray.actors.launch import start_supervisor
    from fleet_ray.client.fleet import FleetClient

    site = DemoSite(pages)
    tmp = tempfile.TemporaryDirectory(prefix="fleet-ray-demo-")
    namespace = "fleet-demo"
    try:
        out(f"demo site: {site.url} ({pages} pages)")
        ray.init(address="local", namespace=namespace, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        store_url = f"sqlite://{tmp.name}/store.db"
        sup = start_supervisor(store_url, namespace=namespace, fleet_name="demo")
        fleet = FleetClient(sup, namespace)
        fleet.apply(demo_spec(site.url, slots))
        out(render_status(fleet.wait_ready(timeout_s=120)))
        job = fleet.submit("titles", site.page_urls())
        results = []
        started = time.monotonic()
        for r in job.results(timeout_s=300):
            results.append(r)
            if live:
                out(progress_line(job.done, job.failed, job.total, time.monotonic() - started), end="\r")
        if live:
            out("")
        # let one health check round report the finished tasks and a few heartbeats
        status = fleet.wait_until(
            lambda st: sum(s.tasks for s in st.pool("titles").slots) >= len(results)
            and (st.pool("heartbeat").slots[0].progress or {}).get("checks", 0) >= 2,
            timeout_s=30,
        )
        out(render_status(status))
        titles = sorted({r.value["title"] for r in results if r.ok})
        summary = {
            "pages": len(results),
            "ok": sum(r.ok for r in results),
            "failed": sum(not r.ok for r in results),
            "titles": len(titles),
            "heartbeat_checks": (status.pool("heartbeat").slots[0].progress or {}).get("checks", 0),
        }
        out(f"crawled {summary['ok']}/{summary['pages']} pages, {summary['titles']} distinct titles, "
            f"heartbeat checks: {summary['heartbeat_checks']}")
        fleet.down(timeout_s=10)
        return summary
    finally:
        if ray.is_initialized():
            ray.shutdown()
        site.close()
        tmp.cleanup()
