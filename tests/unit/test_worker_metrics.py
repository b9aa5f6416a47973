"""The worker's metrics: each result's outcome, and what a scrape shows (a real HTTP endpoint)."""

from __future__ import annotations

import urllib.request

import pytest

from devcluster.procs import free_port
from workerpool.contracts.wire import ExecutionResult
from workerpool.worker import metrics


def result(success: bool, error_type: str | None = None, ms: float = 250.0) -> ExecutionResult:
    return ExecutionResult(
        execution_id="e-1",
        success=success,
        error=None if success else "boom",
        error_type=error_type,
        duration_ms=ms,
        worker_id="w-1",
    )


@pytest.mark.parametrize(
    ("res", "outcome"),
    [
        (result(True), "success"),
        (result(False, "ValueError"), "failure"),
        (result(False, "InvalidContext"), "failure"),
        (result(False, "TimeoutError"), "timeout"),
        (result(False, "ProcessCrashed"), "crashed"),
        (result(False, "WorkerLost"), "worker_lost"),
    ],
)
def test_each_result_has_one_outcome(res: ExecutionResult, outcome: str) -> None:
    assert metrics.outcome(res) == outcome


def test_a_scrape_shows_outcomes_durations_and_process_states() -> None:
    port = free_port()
    states = {"idle": 3, "busy": 1, "killed": 0}
    metrics.serve(port, lambda state: states[state])
    before = metrics.REGISTRY.get_sample_value("workerpool_worker_executions_total", {"outcome": "crashed"}) or 0
    metrics.record_result(result(False, "ProcessCrashed", ms=1500))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert f'workerpool_worker_executions_total{{outcome="crashed"}} {before + 1:.1f}' in text
    assert 'workerpool_worker_executions_total{outcome="worker_lost"}' in text  # present at zero
    assert 'workerpool_worker_execution_duration_seconds_bucket{le="2.5",outcome="crashed"}' in text
    assert 'workerpool_worker_processes{state="busy"} 1.0' in text
    states["busy"] = 2  # read on each scrape
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert 'workerpool_worker_processes{state="busy"} 2.0' in resp.read().decode()
