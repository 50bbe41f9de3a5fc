"""The Ray Serve control plane of a fleet (installed as ``fleet_ray.serve``).

- :mod:`.deploy` — the Serve deployment and :func:`~.deploy.start_api` (what ``fleet-ray up`` runs);
- :mod:`.app` — the FastAPI app: read endpoints, errors, the dashboard at ``/``; :mod:`.control` — the
  token-guarded control endpoints; :mod:`.events` — event cursors and the Server-Sent Events stream;
- :mod:`.backend` — the only place that talks to Ray: the supervisor found by name, status cached;
- :mod:`.auth` — configuration and the bearer-token check (redaction is :mod:`fleet_ray.redact`'s,
  error grouping :mod:`fleet_ray.observe.grouping`'s);
- ``static/`` — the dashboard (plain HTML/JS/CSS, no build step).

Endpoints live under ``/api/v1`` (``/docs`` and ``/openapi.json`` describe them); see
:mod:`fleet_ray.api.models` for the response shapes and :mod:`fleet_ray.client.http` for a client.

The API replica's logs and uncaught exceptions go through :mod:`fleet_ray.redact` (turned on here, as
every process that serves the API imports this package).
"""

from fleet_ray.redact import install_redaction

install_redaction()
