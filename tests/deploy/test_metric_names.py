"""Every metric the alerts, dashboard and autoscaling use is one that service/metrics.py defines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.deploy.deploy_helpers import DEPLOY_DIR

# Files under deploy/ that name metrics: alert rules, their tests, dashboard, adapter rule, HPA.
METRIC_USERS = sorted(
    path
    for pattern in ("prometheus/*.yaml", "prometheus/*.yml", "grafana/*.json", "k8s/**/*.yaml")
    for path in DEPLOY_DIR.glob(pattern)
)
METRIC_NAME = re.compile(r"\bseqserve_[a-z0-9_]*[a-z0-9]\b")
# The sample names prometheus_client exposes for each family type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _exposed_sample_names(registry: CollectorRegistry) -> set[str]:
    """Names a scrape can show, read from the families, so label-less-yet histograms count too."""
    names = set()
    for family in registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


@pytest.fixture(scope="module")
def defined_names() -> set[str]:
    from service.metrics import REGISTRY

    return _exposed_sample_names(REGISTRY)


@pytest.mark.parametrize("path", METRIC_USERS, ids=lambda path: str(path.relative_to(DEPLOY_DIR)))
def test_file_uses_only_metrics_the_service_defines(path: Path, defined_names: set[str]) -> None:
    used = set(METRIC_NAME.findall(path.read_text()))
    assert used <= defined_names, f"{path.name} uses undefined metrics: {sorted(used - defined_names)}"


def test_alerts_dashboard_and_autoscaling_name_metrics_at_all() -> None:
    # Guards the check above against passing vacuously (a moved file, a broken pattern).
    users = {path.name for path in METRIC_USERS if METRIC_NAME.search(path.read_text())}
    assert {
        "seqserve-alerts.yaml",
        "seqserve-dashboard.json",
        "prometheus-adapter-values.yaml",
        "hpa-queue-waiting.yaml",
    } <= users


def test_defined_names_are_the_sample_names_a_scrape_shows(defined_names: set[str]) -> None:
    assert "seqserve_time_to_first_token_seconds_bucket" in defined_names
    assert "seqserve_requests_total" in defined_names
    assert "seqserve_time_to_first_token_seconds" not in defined_names, (
        "histograms expose only suffixed samples"
    )
    assert "seqserve_request_total" not in defined_names
