"""What the fleet tells about itself: clocks, events, crashes, error groups, notifications.

- :mod:`~fleet_ray.observe.hlc` — hybrid logical clock timestamps;
- :mod:`~fleet_ray.observe.envelope` — :class:`Event`, the one event shape (the API's ``EventOut`` and
  status's ``EventStatus`` are projections of it);
- :mod:`~fleet_ray.observe.kinds` — one Pydantic model per event kind, to and from the envelope;
- :mod:`~fleet_ray.observe.events` — the durable idempotent event log and the one event matcher
  (:func:`~fleet_ray.observe.events.kind_matches`, :func:`~fleet_ray.observe.events.matches`);
- :mod:`~fleet_ray.observe.crashes` — crash records from both sides of a crash, merged once;
- :mod:`~fleet_ray.observe.grouping` — the one error grouping and the one ``ErrorGroup`` model: by
  (type, first user frame), or by (event kind, masked message) for lifecycle failures;
- :mod:`~fleet_ray.observe.notify` — webhook/Telegram notifiers with storm folding.

Imports flow envelope → kinds → events (no cycle). May import the store protocol,
:mod:`fleet_ray.errors` and :mod:`fleet_ray.redact` (every redaction goes through it); never Ray.
"""
