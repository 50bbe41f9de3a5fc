"""Typed streams without Ray: declarations, the apply-time wiring check, the codec, emit validation,
and the stream hub's logic (bounds, groups, leases) with an injected clock and object store."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, ConfigDict

from fleet_ray.actors.stream_hub import StreamHubCore
from fleet_ray.automation import Context, NoConfig, SlotIdentity
from fleet_ray.builtins.streams import Doubled, Number, NumberSource, Relay
from fleet_ray.errors import SpecError, StreamError, StreamItemInvalid
from fleet_ray.spec.models import PoolSpec, ResolvedPool, validate_spec
from fleet_ray.streams.declare import Codec, InProcessStreams, compatibility_problem
from fleet_ray.testing import FakeClock


class Product(BaseModel):
    sku: str
    price: float


class ProductV2(BaseModel):
    sku: str
    price: float
    currency: str = "EUR"


class PriceAsText(BaseModel):
    sku: str
    price: str


class StrictProduct(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str
    price: float


class NeedsStock(BaseModel):
    sku: str
    stock: int


class IntPrice(BaseModel):
    sku: str
    price: int


def test_models_fit_when_every_field_the_consumer_reads_matches():
    assert compatibility_problem(Product, Product) is None
    assert compatibility_problem(ProductV2, Product) is None  # extra producer fields are ignored
    assert compatibility_problem(IntPrice, Product) is None  # an int is a valid float
    assert "field 'price' is number in Product but string in PriceAsText" in compatibility_problem(Product, PriceAsText)
    assert "'stock' is required by NeedsStock" in compatibility_problem(Product, NeedsStock)
    assert "forbids extra fields" in compatibility_problem(ProductV2, StrictProduct)


# -- the wiring check inside validate_spec -------------------------------------------------------------
class Scrape:
    outputs = {"products": Product}
    inputs: dict = {}


class Price:
    outputs: dict = {}
    inputs = {"products": Product}


class PriceText:
    outputs: dict = {}
    inputs = {"products": PriceAsText}


CLASSES = {"scrape": Scrape, "price": Price, "price-text": PriceText}


def resolve(pool: PoolSpec) -> ResolvedPool:
    return ResolvedPool(pool, batch=False, distribution=None, installed_version=None,
                        automation_cls=CLASSES[pool.automation])


def spec(*pools):
    return {"pools": list(pools)}


def errors_of(data) -> list[dict]:
    with pytest.raises(SpecError) as info:
        validate_spec(data, resolve)
    return info.value.errors


def test_a_sound_wiring_validates():
    s, _ = validate_spec(spec({"name": "a", "automation": "scrape"},
                              {"name": "b", "automation": "price", "inputs": {"products": "a.products"}}), resolve)
    assert s.pool("b").inputs == {"products": "a.products"}


def test_unknown_streams_and_mismatched_models_are_rejected_naming_pool_and_field():
    errs = errors_of(spec({"name": "a", "automation": "scrape"},
                          {"name": "b", "automation": "price", "inputs": {"products": "zz.products"}},
                          {"name": "c", "automation": "price", "inputs": {"products": "a.offers"}},
                          {"name": "d", "automation": "price-text", "inputs": {"products": "a.products"}},
                          {"name": "e", "automation": "price"}))
    by_loc = {e["loc"]: e["msg"] for e in errs}
    assert "no pool named 'zz'" in by_loc["pools.b.inputs.products"]
    assert "pool 'a' has no output 'offers'" in by_loc["pools.c.inputs.products"]
    assert "type mismatch" in by_loc["pools.d.inputs.products"]
    assert "'price' is number in Product but string in PriceAsText" in by_loc["pools.d.inputs.products"]
    assert "not wired" in by_loc["pools.e.inputs.products"]


def test_bad_references_and_undeclared_outputs_are_rejected():
    errs = errors_of(spec({"name": "a", "automation": "scrape", "streams": {"offers": {"capacity": 10}}},
                          {"name": "b", "automation": "price", "inputs": {"products": "no-dot"}}))
    locs = {e["loc"] for e in errs}
    assert "pools.b.inputs" in locs  # not '<pool>.<output>' (a shape error, before any lookup)
    errs = errors_of(spec({"name": "a", "automation": "scrape", "streams": {"offers": {"capacity": 10}}}))
    assert errs == [{"loc": "pools.a.streams.offers",
                     "msg": "automation 'scrape' declares no output 'offers' (outputs: ['products'])"}]


def test_the_builtin_pipeline_wires_through_entry_points():
    s, resolved = validate_spec(spec({"name": "a", "automation": "builtin.numbers"},
                                     {"name": "b", "automation": "builtin.relay", "inputs": {"numbers": "a.numbers"}}))
    assert resolved["a"].automation_cls is NumberSource and resolved["b"].automation_cls is Relay


# -- codec and emit --------------------------------------------------------------------------------------
def test_codec_round_trips_a_batch_and_names_bad_fields():
    codec = Codec("a.products", Product)
    items = [codec.validate({"sku": "x", "price": "1.5"}), codec.validate(ProductV2(sku="y", price=2))]
    assert codec.decode(codec.encode(items)) == [Product(sku="x", price=1.5), Product(sku="y", price=2.0)]
    with pytest.raises(StreamItemInvalid) as info:
        codec.validate({"sku": "x", "price": "cheap"})
    assert info.value.stream == "a.products" and info.value.errors[0]["loc"] == "price"
    assert "'cheap'" not in str(info.value)  # the value itself is not echoed


def make_ctx(io=None) -> Context:
    ctx = Context(SlotIdentity("a", 0, 1), NoConfig())
    if io is not None:
        ctx.stream_io = io
    return ctx


def test_emit_validates_at_the_producer_and_an_invalid_item_never_reaches_the_stream():
    io = InProcessStreams(outputs={"numbers": Number})
    ctx = make_ctx(io)

    async def go():
        await ctx.emit("numbers", {"n": 1})
        await ctx.emit("numbers", Number(n=2, producer="p"))
        with pytest.raises(StreamItemInvalid):
            await ctx.emit("numbers", {"n": "two"})
        with pytest.raises(StreamError, match="no output stream 'nope'"):
            await ctx.emit("nope", {"n": 3})
        await ctx.emit_many("numbers", [{"n": 3}, Number(n=4)])
        with pytest.raises(StreamItemInvalid):  # one bad item: none of the list goes out
            await ctx.emit_many("numbers", [{"n": 5}, {"n": "six"}])

    asyncio.run(go())
    assert io.emitted["numbers"] == [Number(n=1), Number(n=2, producer="p"), Number(n=3), Number(n=4)]
    assert len(io.invalid) == 2


def test_read_yields_typed_items_and_a_context_outside_a_slot_has_no_streams():
    io = InProcessStreams(inputs={"numbers": Number}, outputs={"doubled": Doubled})
    relay = Relay(make_ctx(io))
    io.feed("numbers", [{"n": 1}, {"n": 2}])

    async def go():
        task = asyncio.create_task(relay.run())
        while len(io.emitted["doubled"]) < 2:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(go())
    assert [d.doubled for d in io.emitted["doubled"]] == [2, 4]
    with pytest.raises(StreamError, match="no streams"):
        asyncio.run(make_ctx().emit("numbers", {"n": 1}))


# -- the hub's logic -------------------------------------------------------------------------------------
def hub(capacity=10, clock=None, **kw) -> StreamHubCore:
    return StreamHubCore("a.numbers", capacity=capacity, clock=clock or FakeClock(), put_object=lambda b: b, **kw)


def batch(*ns: int) -> bytes:
    return Codec("a.numbers", Number).encode([Number(n=n) for n in ns])


def items_of(entries) -> list[int]:
    codec = Codec("a.numbers", Number)
    return [x.n for e in entries for x in codec.decode(e[1])]


def test_every_group_sees_every_batch_in_each_producers_order():
    async def go():
        h = hub(capacity=100)
        h.add_group("g1")
        h.add_group("g2")
        for seq in range(3):
            await h.put("p", seq, batch(seq * 2, seq * 2 + 1), 2)
        assert (await h.put("p", 1, batch(99), 1))["duplicate"]  # a retried batch is ignored
        g1 = await h.pull("g1", "c", max_items=100, wait_s=0)
        g2 = await h.pull("g2", "c", max_items=100, wait_s=0)
        return items_of(g1), items_of(g2)

    assert asyncio.run(go()) == ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])


def test_a_full_stream_holds_producers_back_until_every_group_acknowledged():
    async def go():
        h = hub(capacity=4)
        h.add_group("slow")
        h.add_group("fast")
        await h.put("p", 0, batch(0, 1), 2)
        await h.put("p", 1, batch(2, 3), 2)
        blocked = asyncio.create_task(h.put("p", 2, batch(4, 5), 2))
        await asyncio.sleep(0.01)
        assert not blocked.done() and h.stats()["blocked_producers"] == 1 and h.stats()["depth"] == 4
        got = await h.pull("fast", "f", max_items=10, wait_s=0)
        await h.pull("fast", "f", max_items=10, wait_s=0, ack=[e[0] for e in got])
        await asyncio.sleep(0.01)
        assert not blocked.done()  # the slow group still holds the items
        got = await h.pull("slow", "s", max_items=2, wait_s=0)
        await h.pull("slow", "s", max_items=0, wait_s=0, ack=[e[0] for e in got])
        await asyncio.wait_for(blocked, 1)
        st = h.stats()
        assert st["depth"] == 4 and st["backpressure_episodes"] == 1 and st["blocked_producers"] == 0

    asyncio.run(go())


def test_a_group_load_balances_and_a_dead_consumers_batches_are_redelivered():
    async def go():
        h = hub(capacity=100)
        h.add_group("pool")
        for seq in range(4):
            await h.put("p", seq, batch(seq), 1)
        a = await h.pull("pool", "a", max_items=1, wait_s=0)
        b = await h.pull("pool", "b", max_items=1, wait_s=0)
        assert items_of(a) == [0] and items_of(b) == [1]
        assert h.release("pool", "a") == 1  # a died holding item 0
        c = await h.pull("pool", "b", max_items=10, wait_s=0, ack=[b[0][0]])
        assert items_of(c) == [0, 2, 3]
        await h.pull("pool", "b", max_items=10, wait_s=0, ack=[e[0] for e in c])
        assert h.stats()["depth"] == 0

    asyncio.run(go())


def test_quiet_consumers_lose_their_leases_and_idle_driver_groups_go_away():
    clock = FakeClock()

    async def go():
        h = hub(capacity=100, clock=clock, lease_timeout_s=5, group_idle_s=60)
        h.add_group("pool")
        h.add_group("driver", durable=False)
        await h.put("p", 0, batch(1), 1)
        assert items_of(await h.pull("pool", "gone", wait_s=0)) == [1]
        clock.advance(6)
        assert items_of(await h.pull("pool", "alive", wait_s=0)) == [1]
        clock.advance(61)
        await h.pull("pool", "alive", wait_s=0)
        assert h.groups() == ["pool"]

    asyncio.run(go())


def test_a_group_added_late_still_gets_what_is_retained():
    async def go():
        h = hub(capacity=100)
        await h.put("p", 0, batch(7, 8), 2)  # no group yet: retained for the first one
        h.add_group("late")
        return items_of(await h.pull("late", "c", wait_s=0))

    assert asyncio.run(go()) == [7, 8]


# -- the producer end: acknowledged emits ----------------------------------------------------------------
class GatedHub:
    """A stand-in for the hub actor: each put waits until the test opens the gate."""

    def __init__(self):
        self.puts: list[int] = []
        self.gate = asyncio.Event()
        self.put = self

    def remote(self, producer, seq, payload, n):
        async def put():
            await self.gate.wait()
            self.puts.append(n)
        return put()


def test_a_waiting_emit_returns_only_once_the_hub_holds_the_item_and_concurrent_emits_share_a_put():
    from fleet_ray.actors.stream_io import StreamProducer

    async def go():
        hub = GatedHub()
        p = StreamProducer("a.numbers", hub, "a:0:g1", Codec("a.numbers", Number), batch_max=100)
        first = asyncio.create_task(p.emit(Number(n=0), wait=True))
        await asyncio.sleep(0.01)
        more = [asyncio.create_task(p.emit(Number(n=i), wait=True)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        assert not first.done() and p.accepted == 0  # the put is still pending: not safe yet
        hub.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *more), 2)
        assert p.accepted == 4 and hub.puts == [1, 3]  # the three later emits rode in one batch
        await p.emit(Number(n=4))  # without wait: queued, returns at once
        await p.flush()
        assert p.accepted == 5

    asyncio.run(go())
