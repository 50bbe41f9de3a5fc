"""fleet-ray's Ray actors: supervisor, slots, work queues (installed as ``fleet_ray.actors``).

Every actor process imports this package to load its actor's class, so this is where their logs and
uncaught exceptions are made to go through :mod:`fleet_ray.redact` (:func:`~fleet_ray.redact.install_redaction`).
"""

from fleet_ray.redact import install_redaction

install_redaction()
