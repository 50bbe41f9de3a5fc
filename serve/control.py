"""Control endpoints: apply a spec, scale, recycle, drain, pause, resume. All need the bearer token;
without it the request is answered 401 before its body is read (:mod:`.guard`) or the supervisor is
asked anything."""


from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI
from fastapi.exceptions import RequestValidationError

from fleet_ray.api.models import (
    ApplyResult,
    BreakerOut,
    PoolChange,
    RecycleResult,
    ResumeRequest,
    ScaleRequest,
)
from fleet_ray.campaign.config import target_host
from fleet_ray.errors import UnknownPool

from .backend import Backend

API = "/api/v1"


def add_control_routes(app: FastAPI, backend: Backend, require_token: Any, errors: dict) -> None:
    guarded = [Depends(require_token)]
    responses = {**errors, 409: {"model": errors[401]["model"], "description": "Not possible in this state."},
                 413: {"model": errors[401]["model"], "description": "Request body too large."}}

    async def pool_change(pool: str, message: str) -> PoolChange:
        snap = await backend.status()
        found = next((p for p in snap.data["pools"] if p["name"] == pool), None)
        if found is None:
            raise UnknownPool(pool)
        return PoolChange(pool=pool, desired=found["desired"], paused=found["paused"], message=message)

    @app.post(f"{API}/spec", response_model=ApplyResult, responses=responses, dependencies=guarded,
              tags=["control"])
    async def apply(
        spec: Annotated[dict[str, Any], Body(description="A FleetSpec: {'name': ..., 'pools': [...]}; see "
                                              "fleet_ray.spec.models. Validated as a whole by the supervisor.")],
    ) -> ApplyResult:
        """Make ``spec`` the desired state. A bad spec is answered 422 naming each bad field
        (``pools.web.slots``) and changes nothing."""
        return await backend.apply(spec)

    @app.post(f"{API}/pools/{{pool}}/scale", response_model=PoolChange, responses=responses,
              dependencies=guarded, tags=["control"])
    async def scale(pool: str, body: ScaleRequest) -> PoolChange:
        """Set a pool's slot count (new slots start; surplus slots drain, highest index first)."""
        await backend.scale(pool, body.slots)
        return await pool_change(pool, f"scaling to {body.slots} slot(s)")

    @app.post(f"{API}/pools/{{pool}}/pause", response_model=PoolChange, responses=responses,
              dependencies=guarded, tags=["control"])
    async def pause(pool: str) -> PoolChange:
        """Stop leasing new work to the pool's slots; the slots keep running."""
        await backend.set_paused(pool, True)
        return await pool_change(pool, "paused: no new work is leased")

    @app.post(f"{API}/pools/{{pool}}/drain", response_model=PoolChange, responses=responses,
              dependencies=guarded, tags=["control"])
    async def drain(pool: str) -> PoolChange:
        """Pause the pool and drain every slot gracefully (each within its drain timeout). ``resume``
        brings the slots back."""
        r = await backend.drain(pool)
        return await pool_change(pool, f"draining; resume restores {r.previous_slots} slot(s)")

    @app.post(f"{API}/pools/{{pool}}/resume", response_model=PoolChange, responses=responses,
              dependencies=guarded, tags=["control"])
    async def resume(pool: str, body: Annotated[ResumeRequest | None, Body()] = None) -> PoolChange:
        """Unpause the pool; a drained pool gets back its slot count from before the drain (or
        ``slots``)."""
        r = await backend.resume(pool, body.slots if body else None)
        return await pool_change(pool, f"resumed with {r.desired} slot(s)")

    @app.post(f"{API}/slots/{{slot_id}}/recycle", response_model=RecycleResult, responses=responses,
              dependencies=guarded, tags=["control"])
    async def recycle(slot_id: str) -> RecycleResult:
        """Replace a slot with a fresh generation (graceful drain first)."""
        return await backend.recycle(slot_id)

    @app.post(f"{API}/breakers/{{target}}/reset", response_model=BreakerOut, responses=responses,
              dependencies=guarded, tags=["control"])
    async def reset_breaker(target: str) -> BreakerOut:
        """Close a tripped campaign breaker so work for ``target`` flows again; returns the state it
        had. Recorded as a ``campaign.breaker.reset`` event (operator ``api``). A target that names no
        host is answered 422."""
        try:
            target_host(target)
        except ValueError as exc:
            raise RequestValidationError([{"loc": ("path", "target"), "msg": str(exc)[:200]}]) from None
        return await backend.reset_breaker(target, "api")
