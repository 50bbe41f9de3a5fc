"""The supervisor's decisions, as pure functions over plain inputs.

- :mod:`~fleet_ray.control.lifecycle` — slot states, the per-position record, observations → transitions;
- :mod:`~fleet_ray.control.reconcile` — ``decide(desired, table, placement, now)`` → actions;
- :mod:`~fleet_ray.control.rollout` — what a spec change needs and how a rollout progresses.

Nothing under this package imports Ray, Redis, httpx, sockets or the filesystem (a unit test walks it
and proves so); time comes in as an argument. It may import :mod:`fleet_ray.spec` and
:mod:`fleet_ray.api` models.
"""
