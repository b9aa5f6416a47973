"""Evictions of worker pods: the verdict from what the retire script says the
worker holds, and the webhook's certificate."""

from __future__ import annotations

import datetime as dt

from workerpool.contracts.wire import ExecutionInfo, ProcessInfo, WorkerInfo
from workerpool.decide.eviction import SHOWN, hold_expired, judge_draining, judge_eviction
from workerpool.decide.observation import EVICTION_MARK_SECONDS, PodView
from workerpool.protocols.seed import report_of

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def info(*running: tuple[int, str, float]) -> WorkerInfo:
    procs = [
        ProcessInfo(
            pid=pid,
            process_id=f"p{pid}",
            state="busy",
            memory_mb=1,
            uptime_seconds=1,
            executions_completed=0,
            execution=ExecutionInfo(execution_id=eid, started_at=NOW, elapsed_seconds=elapsed),
        )
        for pid, eid, elapsed in running
    ]
    return WorkerInfo(
        worker_id="w",
        hostname="w",
        started_at=NOW,
        pool_size=len(procs),
        idle_count=0,
        busy_count=len(procs),
        processes=procs,
    )


def test_a_worker_holding_nothing_is_evicted() -> None:
    verdict = judge_eviction("w", [], info())
    assert verdict.allowed and verdict.event.reason == "EvictionAllowed"


def test_a_busy_worker_is_held_and_the_answer_names_what_runs_and_for_how_long() -> None:
    verdict = judge_eviction("w", ["e-1", "e-2"], info((10, "e-1", 12.4), (11, "e-2", 3)))
    assert not verdict.allowed and verdict.event.reason == "EvictionHeld"
    assert "e-1 (running 12 s in pid 10)" in verdict.message and "e-2 (running 3 s in pid 11)" in verdict.message
    # The Event's text does not change while the drain retries (one Event a minute, not one per retry).
    later = judge_eviction("w", ["e-1", "e-2"], info((10, "e-1", 20), (11, "e-2", 11)))
    assert later.event == verdict.event and later.message != verdict.message


def test_what_the_heartbeat_does_not_show_is_still_named() -> None:
    verdict = judge_eviction("w", ["e-new"], None)
    assert not verdict.allowed and "e-new" in verdict.message


def test_many_executions_are_summarised() -> None:
    held = [f"e{i}" for i in range(SHOWN + 3)]
    verdict = judge_eviction("w", held, None)
    assert "and 3 more" in verdict.message and f"running {SHOWN + 3} execution(s)" in verdict.message


def test_without_redis_nothing_is_known_so_the_eviction_is_held() -> None:
    verdict = judge_eviction("w", None, None)
    assert not verdict.allowed and "Redis unavailable" in verdict.message


def test_a_held_pods_mark_makes_it_leaving_until_it_runs_out() -> None:
    stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"metadata": {"name": "w", "annotations": {"bifrost.dev/evicting": stamp}}}
    view = PodView.from_body(body, 0.0)
    assert view.leaving(NOW.timestamp() + 1)
    assert not view.leaving(NOW.timestamp() + EVICTION_MARK_SECONDS + 1)
    junk = PodView.from_body({"metadata": {"annotations": {"bifrost.dev/evicting": "soon"}}}, 0.0)
    assert junk.evicting_at is None and not junk.leaving(NOW.timestamp())


def test_a_hold_past_its_limit_is_allowed_with_a_warning() -> None:
    held = judge_eviction("w", None, None, why="Redis unavailable")
    assert hold_expired(held, "w", 119.0, 120.0) is held
    expired = hold_expired(held, "w", 121.0, 120.0)
    assert expired.allowed and expired.event.type == "Warning" and expired.event.reason == "EvictionHoldExpired"
    assert (
        "held for 121 s, past the pool's limit of 120 s" in expired.message and "Redis unavailable" in expired.message
    )


def test_the_first_hold_is_read_from_its_own_mark() -> None:
    stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    view = PodView.from_body({"metadata": {"annotations": {"bifrost.dev/evicting-since": stamp}}}, 0.0)
    assert view.evicting_since == NOW.timestamp()


def test_a_worker_that_drains_on_sigterm_is_evicted_busy_and_told_what_it_finishes() -> None:
    verdict = judge_draining("w", report_of(info((10, "e-1", 12.4)), None, None, NOW))
    assert verdict.allowed and verdict.event.reason == "EvictionAllowed"
    assert "drains on SIGTERM" in verdict.message and "the 1 execution(s) it runs" in verdict.message
    assert "what it runs" in judge_draining("w", None).message
