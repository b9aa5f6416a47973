"""The recycle annotation grammar and target resolution (DESIGN §4)."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.contracts.wire import ExecutionInfo, ProcessInfo, WorkerInfo
from workerpool.decide.observation import WorkerView
from workerpool.decide.recycle import (
    MAX_RECORDED_RESULTS,
    MAX_REQUEST_LENGTH,
    RecycleRequestError,
    Target,
    decide_recycle,
    parse_request,
    recycle_events,
    resolve,
)
from workerpool.protocols.seed import report_of

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def info(wid: str, pids: dict[int, str], fresh: bool = True) -> WorkerView:
    procs = [
        ProcessInfo(
            pid=pid,
            process_id=f"p{pid}",
            state=state,
            memory_mb=1,
            uptime_seconds=1,  # type: ignore[arg-type]
            executions_completed=0,
            execution=ExecutionInfo(execution_id="e", started_at=T, elapsed_seconds=1) if state == "busy" else None,
        )
        for pid, state in pids.items()
    ]
    busy = sum(1 for s in pids.values() if s == "busy")
    report = WorkerInfo(
        worker_id=wid, started_at=T, hostname=wid, pool_size=len(procs), idle_count=0, busy_count=busy, processes=procs
    )
    return WorkerView(report_of(report, None, None, T), fresh)


@pytest.mark.parametrize(
    ("raw", "targets", "token"),
    [
        ("pool-x7k2p", [Target("pool-x7k2p")], None),
        ("pool-x7k2p:4711", [Target("pool-x7k2p", 4711)], None),
        ("*", [Target("*")], None),
        (" a , b:2 ", [Target("a"), Target("b", 2)], None),
        ("a@2026-11-26T10:00", [Target("a")], "2026-11-26T10:00"),
        ("a:1,*@again", [Target("a", 1), Target("*")], "again"),
    ],
)
def test_grammar(raw: str, targets: list[Target], token: str | None) -> None:
    req = parse_request(raw)
    assert list(req.targets) == targets
    assert req.token == token
    assert req.raw == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "comma-separated list"),
        ("a,,b", "comma-separated list"),
        ("a@", "followed by a token"),
        ("a:0", "not a process id"),
        ("a:x", "not a process id"),
        ("a:-1", "not a process id"),
        ("Pool_X", "not a worker name"),
        ("a:1:2", "not a process id"),
        ("x" * 5000, "longer than"),
    ],
)
def test_malformed_values(raw: str, message: str) -> None:
    with pytest.raises(RecycleRequestError, match=message):
        parse_request(raw)


@settings(max_examples=2000)
@given(st.text(max_size=80))
def test_parser_never_raises_anything_else(raw: str) -> None:
    with contextlib.suppress(RecycleRequestError):
        parse_request(raw)


def test_resolution() -> None:
    live = {"w1": info("w1", {10: "idle", 11: "busy"}), "w2": info("w2", {20: "idle"})}
    commands, results = resolve(parse_request("w1:10,w1:11,w1:99,w3,w2"), live)
    assert [(c.worker_id, c.pid) for c in commands] == [("w1", 10), ("w1", 11), ("w2", None)]
    assert [(r.worker_id, r.pid, r.status) for r in results] == [
        ("w1", 10, "recycle_requested"),
        ("w1", 11, "recycle_requested"),
        ("w1", 99, "rejected"),
        ("w3", None, "rejected"),
        ("w2", None, "recycle_requested"),
    ]
    assert "busy" in results[1].reason
    assert "no process with pid 99" in results[2].reason
    assert "not a live worker of this pool" in results[3].reason


def test_star_targets_every_live_worker_once() -> None:
    live = {"b": info("b", {1: "idle"}), "a": info("a", {2: "idle"})}
    commands, results = resolve(parse_request("*,a"), live)
    assert [(c.worker_id, c.pid) for c in commands] == [("a", None), ("b", None)]
    assert len(results) == 2
    commands, results = resolve(parse_request("*"), {})
    assert commands == []
    assert results[0].status == "rejected"


def test_a_request_of_hundreds_of_targets_makes_one_event_of_each_kind_and_a_bounded_record() -> None:
    """A 4 KiB annotation used to post one Event per target (2048), each ahead of every pool's
    writes, and to store every result and the whole value in the status."""
    live = {f"w{i}": info(f"w{i}", {1: "idle"}) for i in range(300)}
    value = ",".join(["*"] + [f"g{i}" for i in range(150)])
    assert len(value) <= MAX_REQUEST_LENGTH
    decision = decide_recycle(value, "uid", live, T)
    assert decision.publish is not None and len(decision.publish) == 300  # every live worker is sent one
    record = decision.record
    assert len(record.results) == MAX_RECORDED_RESULTS and record.results_omitted == 450 - MAX_RECORDED_RESULTS
    events = recycle_events(decision)
    assert [e.reason for e in events] == ["RecycleRequested", "RecycleRejected"]
    assert all(len(e.message) < 1024 for e in events)


def test_an_over_long_value_is_one_rejection_with_a_cut_record() -> None:
    value = "w," * 2048
    decision = decide_recycle(value, "uid", {}, T)
    assert decision.publish is None
    assert len(decision.record.request) == MAX_REQUEST_LENGTH
    assert [e.reason for e in recycle_events(decision)] == ["RecycleRejected"]
