"""A sink actor: a detached actor (``fleet:sink:<stream>:<name>``) that copies a stream into a sink.

It reads as the durable consumer group ``sink:<name>`` and acknowledges a batch only after the
sink wrote it; restarted by Ray, it first hands back what its previous incarnation had leased, so
nothing is skipped (at-least-once; see :mod:`fleet_ray.streams.sinks`). When the stream's hub dies,
the sink's reader finds the restarted (or recreated) hub by name and its group resumes from what it
acknowledged (the group's position is in the store with the stream); after a head restart the
supervisor starts the sinks it had started again (their specs are in the store).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from fleet_ray.errors import StreamError
from fleet_ray.names import HEAD_RESOURCE, sink_name
from fleet_ray.streams.declare import Codec
from fleet_ray.streams.sinks import open_sink, parse_sink_spec

from .stream_hub import get_hub
from .stream_io import StreamReader

log = logging.getLogger(__name__)

HUB_WAIT_S = 60.0


async def _find_hub(namespace: str, stream: str, wait_s: float = HUB_WAIT_S) -> Any:
    """The stream's hub; waits a while for the supervisor to create it (a restarting head)."""
    deadline = time.monotonic() + wait_s
    while True:
        hub = await asyncio.to_thread(get_hub, namespace, stream)
        if hub is not None:
            return hub
        if time.monotonic() > deadline:
            raise StreamError(f"no stream {stream!r} in namespace {namespace!r}")
        await asyncio.sleep(0.5)


@ray.remote(max_restarts=-1, max_task_retries=-1)
class StreamSinkActor:
    async def __init__(self, namespace: str, stream: str, name: str, spec: dict[str, Any]):
        self.stream = stream
        self.group = f"sink:{name}"
        self.spec = parse_sink_spec(spec)
        self.sink = await asyncio.to_thread(open_sink, self.spec)
        hub = await _find_hub(namespace, stream)
        await hub.add_group.remote(self.group, True, "earliest")
        await hub.release.remote(self.group, self.group)  # what a previous incarnation held
        self.reader = StreamReader(stream, hub, self.group, self.group, Codec(stream, None),
                                   resolve=lambda: get_hub(namespace, stream))
        self.errors = 0
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                async for d in self.reader.deliveries():
                    await asyncio.to_thread(self.sink.write, d.producer, d.seq, d.items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the sink's target failed: the batch stays unacknowledged
                self.errors += 1
                log.warning("sink %s of %s: %s; retrying", self.group, self.stream, exc)
                await asyncio.sleep(1.0)

    async def stats(self) -> dict[str, Any]:
        shown = self.spec.shown() if hasattr(self.spec, "shown") else self.spec.model_dump()
        return {"stream": self.stream, "group": self.group, "written": self.sink.written, "errors": self.errors,
                "skipped": self.reader.skipped, "sink": shown}

    async def stop(self) -> dict[str, Any]:
        self._task.cancel()
        await self.reader.close()
        await asyncio.to_thread(self.sink.close)
        return await self.stats()


def start_sink(namespace: str, stream: str, name: str, spec: Any) -> Any:
    spec = parse_sink_spec(spec)
    return StreamSinkActor.options(
        name=sink_name(stream, name),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        resources={HEAD_RESOURCE: 0.001},
    ).remote(namespace, stream, name, spec.model_dump())
