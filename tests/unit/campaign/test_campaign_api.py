"""The campaign's public surface, and the layering rules: Ray only in actors/campaign_workers,
Chromium only in browser/campaign, guardrail state in the store."""

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


def test_campaign_core_imports_neither_the_browser_code_nor_the_actors():
    code = ("import sys, fleet_ray.campaign, fleet_ray.cli.campaign; "
            "print(sorted(m for m in sys.modules if m.startswith(('fleet_ray.browser', 'fleet_ray.actors', "
            "'playwright'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_campaign_names_stay_importable_as_aliases():
    import fleet_ray
    import fleet_ray.campaign as campaign
    from fleet_ray.campaign.config import CampaignPlacement, MemberIdentity
    from fleet_ray.campaign.proxies import MemberProxyHealth
    from fleet_ray.store.guardrails import BreakerState

    assert fleet_ray.Identity is campaign.Identity is MemberIdentity
    assert campaign.Placement is CampaignPlacement and campaign.ProxyHealth is MemberProxyHealth
    assert campaign.BreakerState is BreakerState
    assert fleet_ray.Placement is not CampaignPlacement  # the pool placement keeps the top-level name


def test_campaign_errors_survive_pickling():
    import pickle

    from fleet_ray.errors import AuditChainBroken, CircuitOpen, MemberTaskFailed, PolicyDenied, RateLimited

    for exc in (CircuitOpen("a.example", "3/21"), PolicyDenied("no", ["target:a"]), RateLimited("a", 5, 1),
                MemberTaskFailed(2, "ValueError", "bad", 1), AuditChainBroken("f", 3, "edited", 2)):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
