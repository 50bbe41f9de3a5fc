"""The campaign's public surface, and the layering rule: only ray_exec touches Ray."""

import subprocess
import sys


def test_campaign_api_is_exported_from_fleet_ray():
    import fleet_ray
    from fleet_ray.campaign import Campaign, verify_audit
    from fleet_ray.errors import CircuitOpen

    assert fleet_ray.Campaign is Campaign and fleet_ray.verify_audit is verify_audit
    assert fleet_ray.CircuitOpen is CircuitOpen
    assert issubclass(CircuitOpen, fleet_ray.FleetError)


def test_pure_campaign_modules_do_not_import_ray():
    code = ("import sys, fleet_ray.campaign, fleet_ray.cli.campaign; from fleet_ray import Campaign; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_campaign_errors_survive_pickling():
    import pickle

    from fleet_ray.errors import AuditChainBroken, CircuitOpen, MemberTaskFailed, PolicyDenied, RateLimited

    for exc in (CircuitOpen("a.example", "3/21"), PolicyDenied("no", ["target:a"]), RateLimited("a", 5, 1),
                MemberTaskFailed(2, "ValueError", "bad", 1), AuditChainBroken("f", 3, "edited", 2)):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
