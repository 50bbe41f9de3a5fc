"""Typed output streams: declarations, the apply-time wiring check, and the wire format.

An automation declares what it emits and reads as class attributes, name → Pydantic model::

    class Scrape(ContinuousAutomation):
        outputs = {"products": Product}

    class Price(ContinuousAutomation):
        inputs = {"products": Product}
        outputs = {"priced": Priced}

        async def run(self):
            async for product in self.ctx.read("products"):
                await self.ctx.emit("priced", Priced(sku=product.sku, eur=...))

and a spec wires a consumer's input to a producer's output by stream name ``<pool>.<output>``::

    pools:
      - {name: scrape, automation: acme.scrape, slots: 4}
      - {name: price, automation: acme.price, slots: 2, inputs: {products: scrape.products}}

:func:`check_wiring` runs inside :func:`fleet_ray.spec.models.validate_spec`: an unknown stream, an input
the automation doesn't declare, or models that don't fit each other reject the whole spec before
anything changes. Items travel as JSON arrays of model dumps (:class:`Codec`), a batch at a time;
the transport (a stream hub actor holding object refs) lives in ``fleet_ray.actors.stream_hub``.

:class:`InProcessStreams` runs the same validation and codec without Ray, for unit tests.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fleet_ray.errors import AutomationError, StreamError, StreamItemInvalid

STREAM_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
_NAME_RE = re.compile(STREAM_NAME_PATTERN)
_COSMETIC = {"title", "description", "examples", "default"}


class StreamOptions(BaseModel):
    """How one declared output stream of a pool is bounded (``PoolSpec.streams[<output>]``)."""

    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(
        10_000, ge=1, le=10_000_000,
        description="Items the stream holds that some consumer group has not acknowledged yet; "
        "above it producers wait (back-pressure).",
    )
    max_bytes: int | None = Field(
        64 * 2**20, ge=1024, description="Bytes the stream holds before producers wait (None: no byte bound)."
    )
    batch_max: int = Field(1000, ge=1, le=100_000, description="Most items a producer sends in one batch.")
    durable: bool = Field(
        True, description="Write every accepted batch ahead to the fleet's store before acknowledging it, so "
        "what emit acknowledged survives the death of the stream hub and a head restart; false keeps the "
        "stream in memory only (faster; a hub crash loses what no consumer group acknowledged yet).",
    )


def stream_name(pool: str, output: str) -> str:
    return f"{pool}.{output}"


def parse_stream_ref(text: str) -> tuple[str, str]:
    """``"scrape.products"`` → ``("scrape", "products")``; raises ValueError otherwise."""
    pool, dot, output = str(text).rpartition(".")
    if not dot or not pool or not _NAME_RE.match(output):
        raise ValueError(f"{text!r} is not a stream reference '<pool>.<output>'")
    return pool, output


def declared(cls: type, attr: str) -> dict[str, type[BaseModel]]:
    """An automation's ``outputs`` or ``inputs`` declaration, checked (name → BaseModel subclass)."""
    raw = getattr(cls, attr, None) or {}
    if not isinstance(raw, Mapping):
        raise AutomationError(f"{cls.__qualname__}.{attr} must be a dict of name → pydantic model")
    out: dict[str, type[BaseModel]] = {}
    for name, model in raw.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise AutomationError(f"{cls.__qualname__}.{attr}: {name!r} is not a valid stream name ({STREAM_NAME_PATTERN})")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise AutomationError(f"{cls.__qualname__}.{attr}[{name!r}] must be a pydantic BaseModel subclass")
        out[name] = model
    return out


def model_path(model: type[BaseModel]) -> str:
    return f"{model.__module__}:{model.__qualname__}"


def import_model(path: str) -> type[BaseModel]:
    """The model class named by :func:`model_path`; raises StreamError if it can't be imported here."""
    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StreamError(f"can't import the stream's model {path!r} here; pass model= explicitly") from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise StreamError(f"{path!r} is not a pydantic model")
    return obj


# -- compatibility ----------------------------------------------------------------------------------
def _normalise(schema: Any, defs: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.split("/")[-1]
            if name in seen:
                return {"$recursive": True}
            return _normalise(defs.get(name, {}), defs, seen | {name})
        return {k: _normalise(v, defs, seen) for k, v in schema.items() if k not in _COSMETIC and k != "$defs"}
    if isinstance(schema, list):
        return [_normalise(v, defs, seen) for v in schema]
    return schema


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        if "type" in schema:
            return str(schema["type"])
        if "anyOf" in schema:
            return " | ".join(_describe(s) for s in schema["anyOf"])
    return "a different schema"


def compatibility_problem(producer: type[BaseModel], consumer: type[BaseModel]) -> str | None:
    """Why items of ``producer`` can't be read as ``consumer`` (None if they can).

    Items travel as JSON, so two models fit when every field the consumer reads has the same
    schema in the producer, every field the consumer requires is one the producer emits, and a
    consumer that forbids extra fields gets none.
    """
    if producer is consumer or issubclass(producer, consumer):
        return None
    ps, cs = producer.model_json_schema(), consumer.model_json_schema()
    pprops = _normalise(ps.get("properties", {}), ps.get("$defs", {}))
    cprops = _normalise(cs.get("properties", {}), cs.get("$defs", {}))
    required = set(cs.get("required", []))
    for name, cschema in cprops.items():
        if name not in pprops:
            if name in required:
                return f"field {name!r} is required by {consumer.__name__} but {producer.__name__} has no such field"
            continue
        pschema = pprops[name]
        if pschema != cschema and not (pschema == {"type": "integer"} and cschema == {"type": "number"}):
            return (f"field {name!r} is {_describe(pschema)} in {producer.__name__} "
                    f"but {_describe(cschema)} in {consumer.__name__}")
    if cs.get("additionalProperties") is False:
        extra = sorted(set(pprops) - set(cprops))
        if extra:
            return f"{consumer.__name__} forbids extra fields but {producer.__name__} also emits {extra}"
    return None


def check_wiring(pools: list[Any], decls: Mapping[str, tuple[dict, dict]]) -> list[dict[str, str]]:
    """Problems with the stream wiring of a spec, as ``{"loc", "msg"}`` (empty if it is sound).

    ``pools`` are :class:`~fleet_ray.spec.models.PoolSpec`; ``decls`` maps a pool name to its automation's
    ``(outputs, inputs)`` declarations.
    """
    errors: list[dict[str, str]] = []
    for pool in pools:
        outputs, inputs = decls.get(pool.name, ({}, {}))
        for name in getattr(pool, "streams", {}) or {}:
            if name not in outputs:
                errors.append({"loc": f"pools.{pool.name}.streams.{name}",
                               "msg": f"automation {pool.automation!r} declares no output {name!r} "
                                      f"(outputs: {sorted(outputs) or 'none'})"})
        wired = getattr(pool, "inputs", {}) or {}
        for name, ref in wired.items():
            loc = f"pools.{pool.name}.inputs.{name}"
            if name not in inputs:
                errors.append({"loc": loc, "msg": f"automation {pool.automation!r} declares no input {name!r} "
                                                  f"(inputs: {sorted(inputs) or 'none'})"})
                continue
            try:
                src_pool, src_out = parse_stream_ref(ref)
            except ValueError as exc:
                errors.append({"loc": loc, "msg": str(exc)})
                continue
            if src_pool not in decls:
                errors.append({"loc": loc, "msg": f"unknown stream {ref!r}: no pool named {src_pool!r}"})
                continue
            src_outputs = decls[src_pool][0]
            if src_out not in src_outputs:
                errors.append({"loc": loc, "msg": f"unknown stream {ref!r}: pool {src_pool!r} has no output "
                                                  f"{src_out!r} (outputs: {sorted(src_outputs) or 'none'})"})
                continue
            problem = compatibility_problem(src_outputs[src_out], inputs[name])
            if problem:
                errors.append({"loc": loc, "msg": f"type mismatch with stream {ref!r}: {problem}"})
        for name in sorted(set(inputs) - set(wired)):
            errors.append({"loc": f"pools.{pool.name}.inputs.{name}",
                           "msg": f"input {name!r} of {pool.automation!r} is not wired to a stream "
                                  "(inputs: {name: <pool>.<output>})"})
    return errors


# -- the wire format --------------------------------------------------------------------------------
class Codec:
    """Validates items against a stream's model and turns batches into bytes and back."""

    def __init__(self, stream: str, model: type[BaseModel] | None):
        self.stream = stream
        self.model = model
        self._adapter = TypeAdapter(list[model] if model is not None else list[Any])

    def validate(self, item: Any) -> BaseModel:
        """The item as the stream's model; :class:`StreamItemInvalid` if it isn't one."""
        model = self.model
        if model is None:
            raise StreamError(f"stream {self.stream!r} has no model to validate against")
        if type(item) is model:
            return item
        try:
            if isinstance(item, BaseModel):
                return model.model_validate(item.model_dump())
            return model.model_validate(item)
        except ValidationError as exc:
            errors = [{"loc": ".".join(map(str, e["loc"])) or "item", "msg": e["msg"]} for e in exc.errors()]
            raise StreamItemInvalid(self.stream, model.__name__, errors) from None

    def encode_one(self, item: BaseModel) -> bytes:
        return item.__pydantic_serializer__.to_json(item)

    @staticmethod
    def join(lines: list[bytes]) -> bytes:
        return b"[" + b",".join(lines) + b"]"

    def encode(self, items: list[BaseModel]) -> bytes:
        return self.join([self.encode_one(i) for i in items])

    def decode(self, payload: bytes) -> list[Any]:
        return self._adapter.validate_json(payload)


class InProcessStreams:
    """The stream side of a :class:`~fleet_ray.automation.Context` without Ray (unit tests, notebooks).

    Emitted items are validated and encoded exactly as in a slot; ``read`` yields what was fed
    with :meth:`feed`. ``emitted[name]`` holds the decoded items each output received.
    """

    def __init__(self, outputs: Mapping[str, type[BaseModel]] | None = None,
                 inputs: Mapping[str, type[BaseModel]] | None = None):
        self.codecs = {n: Codec(n, m) for n, m in (outputs or {}).items()}
        self.input_codecs = {n: Codec(n, m) for n, m in (inputs or {}).items()}
        self.emitted: dict[str, list[Any]] = defaultdict(list)
        self.invalid: list[StreamItemInvalid] = []
        self._queues: dict[str, asyncio.Queue] = defaultdict(asyncio.Queue)

    def codec(self, name: str) -> Codec:
        codec = self.codecs.get(name)
        if codec is None:
            raise StreamError(f"no output stream {name!r} declared (outputs: {sorted(self.codecs) or 'none'})")
        return codec

    async def emit(self, name: str, items: list[Any]) -> None:
        codec = self.codec(name)
        try:
            valid = [codec.validate(item) for item in items]
        except StreamItemInvalid as exc:
            self.invalid.append(exc)
            raise
        self.emitted[name].extend(codec.decode(codec.join([codec.encode_one(v) for v in valid])))

    async def flush(self) -> None:
        return None

    def feed(self, name: str, items: list[Any]) -> None:
        codec = self.input_codecs.get(name)
        if codec is None:
            raise StreamError(f"no input stream {name!r} declared")
        for item in codec.decode(codec.encode([codec.validate(i) for i in items])):
            self._queues[name].put_nowait(item)

    async def read(self, name: str) -> AsyncIterator[Any]:
        if name not in self.input_codecs:
            raise StreamError(f"no input stream {name!r} declared (inputs: {sorted(self.input_codecs) or 'none'})")
        queue = self._queues[name]
        while True:
            yield await queue.get()
