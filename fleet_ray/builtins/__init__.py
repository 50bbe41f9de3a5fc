"""Built-in automations, found through the ``fleet_ray.automations`` entry points like any package's.

- :mod:`~fleet_ray.builtins.basic` — ``builtin.noop``, ``builtin.echo``, ``builtin.sleep``, ``builtin.chaos``;
- :mod:`~fleet_ray.builtins.streams` — ``builtin.numbers``, ``builtin.relay``, ``builtin.probe``;
- :mod:`~fleet_ray.builtins.demo` — ``demo.fetch-title``, ``demo.heartbeat`` and the loopback demo site.

They import only :mod:`fleet_ray.automation` and :mod:`fleet_ray.errors`.
"""
