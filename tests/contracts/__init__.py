"""Contract suites shared by unit and integration tests: one suite per protocol, run against every
implementation (the fakes in ``fleet_ray.testing`` included)."""
