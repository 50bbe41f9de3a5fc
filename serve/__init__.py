"""The Ray Serve control-plane app (installed as ``fleet_ray.serve``)."""
