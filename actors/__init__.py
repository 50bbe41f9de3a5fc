"""fleet-ray's Ray actors: supervisor, slots, work queues (installed as ``fleet_ray.actors``)."""
