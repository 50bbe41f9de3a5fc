import fleet_ray


def test_public_surface_is_pinned():
    assert sorted(fleet_ray.__all__) == sorted([
        "Automation", "AutomationError", "AutomationNotFound", "AutomationVersionMismatch",
        "BatchAutomation", "Context", "ContinuousAutomation", "FleetError", "FleetNotRunning",
        "FleetSpec", "FleetStatus", "HealPolicy", "HealthCheck", "ItemFailed", "JobError", "NoConfig",
        "PhaseTimeout", "Placement", "PoolSpec", "PoolStatus", "RecyclePolicy", "SlotIdentity",
        "SlotStatus", "SpecError", "StoreError", "StoreUnavailable", "UnknownPool", "UnknownSlot",
        "__version__", "connect", "validate_spec",
        # typed streams, events, crash records, grouped errors, notifiers, resumable runs
        "CrashRecord", "ErrorGroup", "Event", "EventLog", "InProcessStreams", "JsonlSinkSpec", "NotifyConfig",
        "NotifyError", "Notifier", "RedisSinkSpec", "RunReport", "StreamError", "StreamItemInvalid",
        "StreamOptions", "TelegramNotifier", "TypedEvent", "WebhookNotifier", "replay_redis",
    ])
    for name in fleet_ray.__all__:
        assert getattr(fleet_ray, name) is not None


def test_importing_fleet_ray_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, fleet_ray, fleet_ray.spec.models, fleet_ray.control.reconcile, fleet_ray.control.lifecycle; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
