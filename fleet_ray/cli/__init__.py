"""The ``fleet-ray`` command line (entry point ``fleet_ray.cli.main:main``).

- :mod:`~fleet_ray.cli.main` — argument parsing and the fleet commands;
- :mod:`~fleet_ray.cli.render` — plain-text status tables and the progress line;
- :mod:`~fleet_ray.cli.campaign` — ``verify-audit`` and ``breaker status|reset``;
- :mod:`~fleet_ray.cli.demo` — ``fleet-ray demo``: a whole fleet on one laptop.

The CLI is a driver: it reaches a running fleet through :mod:`fleet_ray.client` and imports the actors
only to start the supervisor (``up``, ``demo``), lazily, since they need Ray.
"""
