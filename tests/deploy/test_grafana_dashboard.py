"""The Grafana dashboard is well-formed, its PromQL parses, and it shows what operators need."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import DEPLOY_DIR, run_tool

pytestmark = pytest.mark.timeout(120)

DASHBOARD = DEPLOY_DIR / "grafana" / "seqserve-dashboard.json"
# Grafana fills these in before a query reaches Prometheus; any valid stand-in parses the same.
TEMPLATE_STAND_INS = {"$__rate_interval": "5m", "$namespace": ".*", "$model": ".*"}


def _panels() -> list[dict]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def _expressions() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel["targets"]]


def test_dashboard_panels_have_unique_ids_and_a_query_each() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in _panels():
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", "the data source must be selectable"


def test_dashboard_queries_parse_as_promql(tool: Callable[[str], str], tmp_path: Path) -> None:
    # promtool has no bare expression checker; recording rules make it parse each query.
    rules = []
    for index, expression in enumerate(_expressions()):
        for variable, stand_in in TEMPLATE_STAND_INS.items():
            expression = expression.replace(variable, stand_in)
        rules.append({"record": f"dashboard:query_{index}", "expr": expression})
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool([tool("promtool"), "check", "rules", str(rule_file)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "metric",
    [
        "seqserve_requests_total",
        "seqserve_time_to_first_token_seconds_bucket",
        "seqserve_inter_token_latency_seconds_bucket",
        "seqserve_generation_tokens_total",
        "seqserve_batch_size_sum",
        "seqserve_num_requests_waiting",
        "seqserve_kv_slots_usage_ratio",
        "seqserve_classifier_latency_seconds_bucket",
    ],
)
def test_dashboard_shows_requests_latency_tokens_batching_queue_slots_and_classifier(metric: str) -> None:
    assert any(metric in expression for expression in _expressions())
