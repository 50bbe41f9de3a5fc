"""The typed shapes the fleet speaks to the outside: Pydantic models, no logic, no I/O.

- :mod:`~fleet_ray.api.status` — fleet, pool and slot status (the supervisor's ``status`` answer, the
  client's, the CLI's and the HTTP API's);
- :mod:`~fleet_ray.api.models` — everything else the control-plane API returns (events, grouped errors,
  streams, nodes, health) and the error body.

Imports nothing of fleet_ray but :mod:`fleet_ray.errors`.
"""
