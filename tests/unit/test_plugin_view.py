"""What `kubectl workerpool` prints, from plain WorkerPool objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.contracts.wire import WorkerInfo
from workerpool.plugin.view import (
    Pool,
    UnreadableStatus,
    duration,
    outcome_lines,
    process_rows,
    queue_document,
    recycle_outcome,
    recycle_request,
    render_top,
    workers_document,
)

STARTED = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def pool_object(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "etl", "namespace": "team"},
        "spec": {"minWorkers": 1, "maxWorkers": 4},
        "status": status,
    }


def worker(worker_id: str, *, busy_pid: int | None = None) -> dict[str, Any]:
    processes = []
    for pid in (11, 12):
        busy = pid == busy_pid
        processes.append(
            {
                "pid": pid,
                "processId": f"{worker_id}-{pid}",
                "state": "busy" if busy else "idle",
                "memoryMb": 41.7,
                "uptimeSeconds": 125.0,
                "executionsCompleted": 3,
                "execution": {"executionId": "e-1", "startedAt": STARTED.isoformat(), "elapsedSeconds": 7.2}
                if busy
                else None,
            }
        )
    return {
        "workerId": worker_id,
        "startedAt": STARTED.isoformat(),
        "hostname": worker_id,
        "minWorkers": 2,
        "maxWorkers": 2,
        "poolSize": 2,
        "idleCount": 1 if busy_pid else 2,
        "busyCount": 1 if busy_pid else 0,
        "processes": processes,
    }


LIVE = pool_object(
    desiredWorkers=2,
    workers=2,
    readyWorkers=2,
    busyCount=1,
    idleCount=3,
    queue={"depth": 4, "oldestAgeSeconds": 1.5},
    workerDetails=[worker("etl-b"), worker("etl-a", busy_pid=12)],
)


def test_top_has_a_header_per_pool_and_a_row_per_process_sorted() -> None:
    out = render_top([Pool.from_object(LIVE)]).splitlines()
    assert out[0] == "team/etl: min 1 max 4 desired 2 workers 2 busy 1 idle 3 queue 4 ready 2"
    assert out[1].split() == ["WORKER", "PID", "STATE", "MEMORY(MB)", "UPTIME", "COMPLETED", "EXECUTION", "ELAPSED"]
    assert out[2].split() == ["etl-a", "11", "idle", "42", "2m5s", "3", "-", "-"]
    assert out[3].split() == ["etl-a", "12", "busy", "42", "2m5s", "3", "e-1", "7s"]
    assert [line.split()[0] for line in out[4:]] == ["etl-b", "etl-b"]


def test_a_new_pool_says_what_it_does_not_know_yet() -> None:
    out = render_top([Pool.from_object(pool_object())])
    assert "desired ? workers ? busy ? idle ? queue ? ready ?" in out
    assert "(no live workers reported)" in out
    assert render_top([]) == "No WorkerPools found."


def test_json_is_the_seeds_worker_info_list_in_snake_case() -> None:
    doc = workers_document([Pool.from_object(LIVE)])
    assert [w["worker_id"] for w in doc] == ["etl-b", "etl-a"]
    assert set(doc[1]) == {
        "worker_id", "started_at", "hostname", "min_workers", "max_workers",
        "pool_size", "idle_count", "busy_count", "processes",
    }  # fmt: skip
    assert doc[1]["processes"][1]["execution"] == {
        "execution_id": "e-1",
        "started_at": "2026-11-26T09:00:00Z",
        "elapsed_seconds": 7.2,
    }
    assert [WorkerInfo.model_validate(w) for w in doc]  # the seed's schema reads it back


def test_queue_is_the_seeds_queue_status() -> None:
    assert queue_document(Pool.from_object(LIVE)) == {"depth": 4, "oldest_age_seconds": 1.5}
    assert queue_document(Pool.from_object(pool_object())) == {"depth": 0, "oldest_age_seconds": 0.0}


def test_a_recycle_is_matched_to_its_own_request_only() -> None:
    request = recycle_request(["etl-a:12", "etl-z"], False, "t1")
    assert request == "etl-a:12,etl-z@t1"
    assert recycle_request([], True, "t2") == "*@t2"
    record = {
        "request": request,
        "handledAt": STARTED.isoformat(),
        "results": [
            {"workerId": "etl-a", "pid": 12, "status": "recycle_requested"},
            {"workerId": "etl-z", "status": "rejected", "reason": "not a worker of this pool"},
        ],
    }
    assert recycle_outcome(Pool.from_object(pool_object(lastRecycle={**record, "request": "older"})), request) is None
    found = recycle_outcome(Pool.from_object(pool_object(lastRecycle=record)), request)
    assert found is not None
    assert outcome_lines(found) == ["etl-a:12\trecycle_requested", "etl-z\trejected: not a worker of this pool"]


def test_a_status_that_does_not_parse_is_a_clear_error() -> None:
    with pytest.raises(UnreadableStatus, match="team/etl: unreadable status"):
        Pool.from_object(pool_object(workers=-1))


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (59.9, "59s"), (60, "1m0s"), (3725, "1h2m"), (90000, "1d1h")]
)
def test_durations_read_like_kubectls_ages(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


@given(st.lists(st.integers(1, 5), max_size=6))
def test_every_process_gets_exactly_one_row(process_counts: list[int]) -> None:
    details = []
    for i, n in enumerate(process_counts):
        w = worker(f"w{i}")
        w["processes"] = [dict(w["processes"][0], pid=p + 1) for p in range(n)]
        details.append(w)
    rows = process_rows(Pool.from_object(pool_object(workerDetails=details)))
    assert len(rows) == sum(process_counts)


def test_elapsed_counts_from_the_executions_start_and_an_idle_workers_uptime_from_its_own() -> None:
    """The status refreshes these gauges every 30 s; `top` reads the heartbeat's own start times."""
    later = STARTED + dt.timedelta(seconds=95)
    out = render_top([Pool.from_object(LIVE)], now=later).splitlines()
    assert out[3].split() == ["etl-a", "12", "busy", "42", "2m5s", "3", "e-1", "1m35s"]
    idle = worker("b-1")
    idle.update(processes=[], poolSize=0, idleCount=4, busyCount=0)
    rows = process_rows(Pool.from_object(pool_object(workerDetails=[idle])), now=later)
    assert rows == [("b-1", "-", "idle (4 free)", "-", "1m35s", "-", "-", "-")]
