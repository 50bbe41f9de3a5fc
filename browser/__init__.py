"""The browser add-on (installed as ``fleet_ray.browser``)."""
