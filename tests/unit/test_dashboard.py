"""The Grafana dashboard the chart ships: every PromQL expression parses (a real PromQL
parser) and names only metrics the operator or the worker exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

import workerpool.controller.process.metrics  # noqa: F401  (registers the operator's metrics)
from workerpool.worker import metrics as worker_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/workerpool-operator/dashboards/workerpool.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported(registry: CollectorRegistry) -> set[str]:
    """The series names a scrape can show, by family (a labelled metric may have no samples yet)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.name.startswith("workerpool_"):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


EXPORTED = exported(REGISTRY) | exported(worker_metrics.REGISTRY)


def expressions() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def metric_names(node: Any) -> Iterator[str]:
    """Every metric a PromQL syntax tree selects."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield from metric_names(node.vector_selector)
        return
    for attr in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None:
            yield from metric_names(child)
    for arg in getattr(node, "args", None) or []:
        yield from metric_names(arg)


def test_the_dashboard_has_the_panels_users_ask_for() -> None:
    titles = " ".join(title.lower() for title, _ in expressions())
    for topic in ("queue depth", "queue wait", "busy and idle", "desired vs actual", "scale events", "cold start",
                  "outcome", "duration", "recycle", "status writes", "redis up"):  # fmt: skip
        assert topic in titles


@pytest.mark.parametrize(("title", "expr"), list(expressions()))
def test_each_expression_parses_and_names_exported_metrics(title: str, expr: str) -> None:
    tree = promql_parser.parse(expr)  # raises on a syntax error
    names = set(metric_names(tree))
    assert names, f"{title}: selects no metric"
    assert names <= EXPORTED, f"{title}: not exported: {sorted(names - EXPORTED)}"


def test_the_walker_finds_what_it_should_and_the_parser_rejects_nonsense() -> None:
    tree = promql_parser.parse("histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m]))) / on() group_left b + -c")
    assert set(metric_names(tree)) == {"a_bucket", "b", "c"}
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse("sum(rate(a[5m])")
    assert "workerpool_queue_depth" in EXPORTED and "workerpool_worker_executions_total" in EXPORTED
    assert "workerpool_cold_start_seconds_bucket" in EXPORTED
