"""What the fleet tells about itself: clocks, events, crashes, error groups, notifications.

- :mod:`~fleet_ray.observe.hlc` — hybrid logical clock timestamps;
- :mod:`~fleet_ray.observe.events` — the event envelope, the durable idempotent log and its one matcher;
- :mod:`~fleet_ray.observe.kinds` — one Pydantic model per event kind;
- :mod:`~fleet_ray.observe.crashes` — crash records from both sides of a crash, merged once;
- :mod:`~fleet_ray.observe.grouping` — failures grouped by (type, first user frame);
- :mod:`~fleet_ray.observe.notify` — webhook/Telegram notifiers with storm folding.

May import the store protocol, :mod:`fleet_ray.errors` and :mod:`fleet_ray.redact`; never Ray.
"""
