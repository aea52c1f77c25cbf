"""The Grafana dashboard and the Prometheus alert rules in deploy/ use exactly what /metrics
exports: every PromQL expression parses (promql-parser), and every metric name, label name and
label value it selects, and every label it groups by, is found in a live /metrics of
`cds-service serve` after traffic that makes every series appear."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser
import pytest
import requests
import yaml
from conftest import EXAMPLE_NOW, load_scenario
from prometheus_client.parser import text_string_to_metric_families
from servers import ServiceProcess, start_service, stop

from cds_service import metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "cds-service.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
OVERRIDE_SYSTEM = "https://crampcds.dev/fhir/CodeSystem/override-reason"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
# Grafana's variables, as the values Grafana would put in their place.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$__interval": "15s",
    "$instance": ".*",
}


# ---------------------------------------------------------------- the expressions


def dashboard_panels(document: dict) -> list[dict]:
    panels = []
    for panel in document["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])  # a collapsed row holds its panels
    return panels


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard, named by where it is."""
    document = json.loads(DASHBOARD.read_text())
    found = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in dashboard_panels(document)
        for target in panel.get("targets") or []
    }
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            # label_values(metric, label) is Grafana's, not PromQL: the series it reads.
            found[f"variable {variable['name']}"] = match.group(1)
    return found


def alert_rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def expressions() -> dict[str, str]:
    found = dashboard_expressions()
    for rule in alert_rules():
        found[f"alert {rule['alert']}"] = rule["expr"]
    return found


def substituted(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


@dataclass
class Uses:
    """What one expression reads: selectors (metric, [(label, op, value)]) and, for each
    aggregation, the labels it groups by and the metrics under it."""

    selectors: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)
    groupings: list[tuple[list[str], set[str]]] = field(default_factory=list)


def uses(expr: str) -> Uses:
    tree = promql_parser.parse(substituted(expr))  # raises ValueError on a syntax error
    found = Uses()

    def visit(node) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [
                (m.name, str(m.op).rsplit(".", 1)[-1], m.value) for m in node.matchers.matchers
            ]
            found.selectors.append((node.name, matchers))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            under: set[str] = set()

            def collect(inner) -> bool:
                if isinstance(inner, promql_parser.VectorSelector):
                    under.add(inner.name)
                return True

            promql_parser.walk(node.expr, collect)
            found.groupings.append((list(node.modifier.labels), under))
        return True

    promql_parser.walk(tree, visit)
    return found


# ---------------------------------------------------------------- a live /metrics


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    """Each sample name of a live /metrics with its labels and the values each label took,
    after a hook call with cards and an overridden card's feedback."""
    service: ServiceProcess = start_service(
        tmp_path_factory.mktemp("dashboard"), {"CDS_FIXED_NOW": EXAMPLE_NOW}, workers=1
    )
    try:
        request, expected = load_scenario("cramps-only")
        answer = requests.post(
            f"{service.base_url}/cds-services/{expected['service']}", json=request, timeout=30
        )
        assert answer.status_code == 200 and answer.json()["cards"]
        item = {
            "card": answer.json()["cards"][0]["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": f"2026-11-20T12:{uuid.uuid4().int % 60:02d}:00Z",
            "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": "already-addressed"}},
        }
        feedback = requests.post(
            f"{service.base_url}/cds-services/{expected['service']}/feedback",
            json={"feedback": [item]},
            timeout=30,
        )
        assert feedback.status_code == 200
        text = requests.get(f"{service.base_url}/metrics", timeout=10).text
    finally:
        stop(service.process)
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = series.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return series


# ---------------------------------------------------------------- the checks


def test_every_expression_parses():
    found = expressions()
    assert len(found) >= 20
    for where, expr in found.items():
        try:
            uses(expr)
        except ValueError as error:
            pytest.fail(f"{where}: {error}: {expr}")


def test_every_metric_label_and_value_used_is_exported(live):
    problems = []
    for where, expr in expressions().items():
        used = uses(expr)
        for name, matchers in used.selectors:
            if name not in live:
                problems.append(f"{where}: no series {name} in /metrics")
                continue
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in live[name]:
                    problems.append(f"{where}: {name} has no label {label}")
                elif op in {"Equal", "NotEqual"} and value not in live[name][label]:
                    problems.append(f"{where}: {name}{{{label}={value!r}}} is never exported")
        for labels, under in used.groupings:
            for label in labels:
                if label in TARGET_LABELS:
                    continue
                if not any(label in live.get(name, {}) for name in under):
                    problems.append(f"{where}: grouped by {label}, which {under} lack")
    assert problems == []


def test_the_dashboard_shows_every_metric_family():
    used = {name for expr in dashboard_expressions().values() for name, _ in uses(expr).selectors}
    families = {metric.name for metric in metrics.REGISTRY.collect()}
    for family in families:
        assert any(name == family or name.startswith(f"{family}_") for name in used), family


def test_the_dashboard_is_well_formed():
    document = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels(document)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert document["uid"] and document["title"]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_the_alert_rules_cover_what_the_issue_asks_and_are_complete():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    subjects = {
        "5xx rate": 'status=~"5.."',
        "p99 latency": "histogram_quantile(0.99",
        "FHIR fallback failures": "cds_fhir_requests_total",
        "auth failure spikes": "cds_auth_failures_total",
        "audit spool growing": "cds_audit_spool_depth",
    }
    for subject, needle in subjects.items():
        assert any(needle in rule["expr"] for rule in rules.values()), subject
    for name, rule in rules.items():
        assert re.fullmatch(r"Cds[A-Za-z0-9]+", name)
        assert rule["for"] and rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
