"""The alert rules load in promtool, and their unit tests pass and cover every alert both ways."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from tests.deploy.deploy_helpers import PROMETHEUS_DIR, run_tool

pytestmark = pytest.mark.timeout(120)

ALERTS = PROMETHEUS_DIR / "seqserve-alerts.yaml"
ALERT_TESTS = PROMETHEUS_DIR / "seqserve-alerts.test.yaml"


def _alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_alert_rules_pass_promtool_check(tool: Callable[[str], str]) -> None:
    result = run_tool([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass_in_promtool(tool: Callable[[str], str]) -> None:
    result = run_tool([tool("promtool"), "test", "rules", ALERT_TESTS.name], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_errors_queue_time_to_first_token_and_readiness() -> None:
    assert _alert_names() == {
        "SeqserveHighErrorRate",
        "SeqserveQueueSaturated",
        "SeqserveSlowTimeToFirstToken",
        "SeqserveModelNotReady",
    }


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == _alert_names(), f"never seen firing: {sorted(_alert_names() - firing)}"
    assert silent == _alert_names(), f"never seen silent: {sorted(_alert_names() - silent)}"


def test_scrape_config_loads_the_alert_rules_and_labels_namespace_and_pod() -> None:
    # Debian's promtool is built without Kubernetes service discovery, so `promtool check config`
    # cannot read this file here; its structure is checked instead.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [ALERTS.name]
    (job,) = config["scrape_configs"]
    targets = {relabel.get("target_label") for relabel in job["relabel_configs"]}
    assert {"namespace", "pod"} <= targets, "the alerts and the dashboard group by namespace and pod"
