"""The reputation circuit breaker, as a campaign sees it: one per target host, shared cluster-wide.

Every guarded request's outcome is counted in the target's window; the breaker trips when the window
holds at least ``min_samples`` outcomes and ``failures / samples > failure_rate``. A tripped breaker
stays tripped — there is no half-open state and no timer — until an operator resets it
(:func:`~fleet_ray.campaign.operator.reset_breaker`). The window arithmetic and
:class:`~fleet_ray.store.guardrails.BreakerState` live with the guardrail state that runs them
(:mod:`fleet_ray.store.guardrails`); this module holds what a trip tells the campaign's notifier.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BreakerTrip(BaseModel):
    """What the notifier hook receives (and the ``campaign.breaker.tripped`` event holds)."""

    model_config = ConfigDict(extra="forbid")

    target: str
    samples: int
    failures: int
    failure_rate: float
    threshold: float
    window_s: float
    tripped_at_ms: int
    campaign_id: str | None = None
