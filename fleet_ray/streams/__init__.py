"""Typed output streams, the part every side shares (no Ray here).

- :mod:`~fleet_ray.streams.declare` — stream declarations on automations, the apply-time wiring check,
  the wire codec and an in-process stand-in for unit tests;
- :mod:`~fleet_ray.streams.sinks` — JSONL and Redis Stream sinks.

The hub actors are in ``fleet_ray.actors.stream_hub``; the driver-side reader is
:mod:`fleet_ray.client.subscription`.
"""
