"""What a pool controller knows of its workers: a worker that says it went offline
is gone at once, and the heartbeat snapshot it leaves behind does not bring it back."""

from __future__ import annotations

import datetime as dt

from workerpool.contracts.report import WorkerReport
from workerpool.controller.loop.state import PoolState

from .test_pool_controller import FakeClock

T = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def report(at: float) -> WorkerReport:
    return WorkerReport("b-1", T, "b-1", 0, 0, 0, reported_at=T + dt.timedelta(seconds=at))


def state() -> tuple[PoolState, FakeClock, list[int]]:
    clock, pokes = FakeClock(), [0]
    clock.wall = T.timestamp() + 10
    s = PoolState("", lambda: pokes.__setitem__(0, pokes[0] + 1), clock)
    s.on_pod("ADDED", {"metadata": {"name": "b-1", "uid": "p"}, "status": {"phase": "Running"}})
    return s, clock, pokes


def test_worker_offline_removes_the_worker_and_its_leftover_snapshot_does_not_bring_it_back() -> None:
    s, clock, pokes = state()
    s.on_heartbeat(report(at=9))
    assert "b-1" in s.observe(22, None, None).workers
    before = pokes[0]
    s.on_offline("b-1")
    assert "b-1" not in s.observe(22, None, None).workers and pokes[0] > before
    s.on_resync({"b-1"}, {"b-1": report(at=9)})  # the snapshot lives 60 s after the worker stopped
    assert "b-1" not in s.workers
    s.on_heartbeat(report(at=9))  # a late copy of the old heartbeat
    assert "b-1" not in s.workers
    clock.advance(5)
    s.on_heartbeat(report(at=14))  # the container restarted in the same pod: a worker again
    assert "b-1" in s.workers and not s.offline


def test_a_registration_without_counts_is_never_fresh() -> None:
    s, _, _ = state()
    s.on_resync({"b-1"}, {"b-1": WorkerReport("b-1", T, "b-1", 0, 0, 0, reported_at=None, complete=False)})
    view = s.observe(22, None, None).workers["b-1"]
    assert not view.fresh and not view.info.runs_nothing


def test_a_pod_whose_eviction_is_held_is_gone_only_when_its_worker_was_retired() -> None:
    """Seed: the retire script stopped its worker claiming, so it is replaced now. Bifrost: its
    worker still takes deliveries, so it counts (the pool is neither short nor over) until it goes."""
    s, clock, _ = state()
    held = {"bifrost.dev/evicting": "2026-12-01T12:00:05Z", "bifrost.dev/evicting-since": "2026-12-01T12:00:05Z"}
    s.on_pod("MODIFIED", {"metadata": {"name": "b-1", "uid": "p", "annotations": held}, "status": {"phase": "Running"}})
    (retired,) = s.observe(22, None, None, leaving_is_gone=True).pods
    (serving,) = s.observe(22, None, None, leaving_is_gone=False).pods
    assert retired.terminating and not retired.active
    assert serving.active
    clock.advance(130)  # the drain never came back: the mark ran out
    (again,) = s.observe(22, None, None, leaving_is_gone=True).pods
    assert again.active
