"""`workerDetails` within its byte budget: the estimate is an upper bound of the real JSON,
and at the CRD's maxima (and at the 50 x 128 busy processes that made every status write
fail, 1.68 MiB) the whole status stays well under 1 MiB, cutting idle workers' process
lists first, then the largest, then whole workers, and saying so."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.contracts.resource import ExecutionDetail, ProcessDetail, WorkerDetail
from workerpool.contracts.wire import MAX_INT, MAX_SECONDS, MAX_TEXT, QueueStatus, to_status
from workerpool.decide.detail_budget import within_budget, worker_bytes
from workerpool.decide.observation import Observation, PodView
from workerpool.decide.scaling import ScalePlan
from workerpool.decide.status import build_status, render

from .test_scaling import worker

NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
text = st.text(max_size=MAX_TEXT)
seconds = st.floats(0, MAX_SECONDS, allow_nan=False, allow_infinity=False)
counts = st.integers(0, MAX_INT)
moments = st.datetimes(timezones=st.just(dt.UTC))

executions = st.builds(ExecutionDetail, execution_id=text, started_at=moments, elapsed_seconds=seconds)
processes = st.builds(
    ProcessDetail,
    pid=st.integers(1, MAX_INT),
    process_id=text,
    state=st.sampled_from(["idle", "busy", "killed"]),
    memory_mb=st.floats(0, 1e9, allow_nan=False),
    uptime_seconds=seconds,
    executions_completed=counts,
    execution=st.none() | executions,
)
details = st.builds(
    WorkerDetail,
    worker_id=text,
    started_at=moments,
    hostname=text,
    min_workers=counts,
    max_workers=counts,
    pool_size=counts,
    idle_count=counts,
    busy_count=counts,
    processes=st.lists(processes, max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(details)
def test_the_estimate_is_an_upper_bound_of_the_rendered_json(detail: WorkerDetail) -> None:
    # ensure_ascii (json.dumps' default, and what the API client sends): a character beyond the
    # BMP is 12 bytes (a run found a 6-byte allowance per character, which this test had, too small).
    assert len(json.dumps(to_status(detail))) <= worker_bytes(detail)


def pool_status(workers: int, busy: int, idle: int) -> dict[str, Any]:
    """Even workers run `busy` processes, odd ones have `idle` idle processes and run nothing."""
    pods = tuple(PodView(f"w{i}", f"u{i}", "Running", True, False, 0.0, "h") for i in range(workers))
    views = {shape: worker("w", busy=shape[0], idle=shape[1]) for shape in ((busy, 0), (0, idle))}
    # One view per shape, shared (building 2.5 million processes would be the test's whole cost);
    # the details name each worker by its view, which is all a size check needs.
    obs = Observation(
        pods=pods,
        workers={f"w{i}": views[(busy, 0) if i % 2 == 0 else (0, idle)] for i in range(workers)},
        queue=QueueStatus(depth=0, oldest_age_seconds=0),
    )
    status = build_status(
        generation=1,
        obs=obs,
        plan=ScalePlan(desired=workers, demand=0),
        stall=None,
        last_recycle=None,
        previous_conditions=[],
        now=NOW,
    )
    return render(status)


def test_fifty_workers_of_128_processes_fit_idle_lists_cut_first() -> None:
    s = pool_status(50, busy=128, idle=128)
    assert len(json.dumps(s)) < 1024 * 1024
    assert s["poolSize"] == 50 * 128 and s["busyCount"] == 25 * 128  # the sums count everything
    shown = s["workerDetails"]
    cut = [i for i, d in enumerate(shown) if not d.get("processes")]
    assert cut and s["processDetailsOmitted"] == len(cut)
    idle_workers = {i for i, d in enumerate(shown) if d["busyCount"] == 0}
    if any(shown[i]["busyCount"] > 0 for i in cut):  # a busy worker's list went only after every idle one's
        assert idle_workers <= set(cut)


def test_the_crds_maxima_fit() -> None:
    """maxWorkers 10000, processes.max 256: every worker busy with 256 processes."""
    s = pool_status(10_000, busy=256, idle=256)
    size = len(json.dumps(s))
    assert size < 1024 * 1024, size
    assert s["workerDetailsOmitted"] >= 10_000 - 50
    assert s["processDetailsOmitted"] > 0


def test_under_budget_nothing_is_cut() -> None:
    s = pool_status(10, busy=2, idle=2)
    assert "processDetailsOmitted" not in s or s["processDetailsOmitted"] == 0
    assert all(d["processes"] for d in s["workerDetails"])


def test_whole_workers_go_last_and_the_counts_say_so() -> None:
    one = WorkerDetail.model_validate(to_status(WorkerDetail(
        worker_id="w", started_at=NOW, hostname="h", min_workers=0, max_workers=1, pool_size=0,
        idle_count=0, busy_count=0, processes=[],
    )))  # fmt: skip
    budgeted = within_budget([one] * 10, budget=worker_bytes(one) * 4)
    assert len(budgeted.details) == 4 and budgeted.workers_omitted == 6 and budgeted.processes_omitted == 0
