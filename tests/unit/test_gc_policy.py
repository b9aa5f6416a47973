"""The operator's garbage-collection policy, in virtual time, and its pause metric."""

from __future__ import annotations

import asyncio
import gc

import pytest
from prometheus_client import REGISTRY

from workerpool.controller.process import gc_policy


async def test_freezes_every_period_and_collects_everything_every_full_period(monkeypatch: pytest.MonkeyPatch) -> None:
    now, calls = [0.0], []
    for name in ("freeze", "unfreeze", "collect"):
        monkeypatch.setattr(gc_policy.gc, name, lambda name=name: calls.append((now[0], name)))

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] > 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await gc_policy.keep_collections_short(1.0, full_seconds=2.5, clock=lambda: now[0], sleep=sleep)
    assert calls == [
        (1.0, "freeze"),
        (2.0, "freeze"),
        (3.0, "unfreeze"),  # 2.5 s since the start: everything is collected once...
        (3.0, "collect"),
        (3.0, "freeze"),  # ...and frozen again
        (4.0, "freeze"),
    ]


def test_each_collection_is_timed_by_generation() -> None:
    ticks = iter([10.0, 10.4])
    timer = gc_policy.PauseTimer(clock=lambda: next(ticks))
    before = REGISTRY.get_sample_value("workerpool_gc_pause_seconds_sum", {"generation": "2"}) or 0.0
    timer("start", {"generation": 2})
    timer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    after = REGISTRY.get_sample_value("workerpool_gc_pause_seconds_sum", {"generation": "2"})
    assert after == pytest.approx(before + 0.4)


def test_the_timer_hooks_into_real_collections_and_unhooks() -> None:
    timer = gc_policy.PauseTimer()
    timer.install()
    try:
        before = REGISTRY.get_sample_value("workerpool_gc_pause_seconds_count", {"generation": "2"}) or 0.0
        gc.collect()
        assert REGISTRY.get_sample_value("workerpool_gc_pause_seconds_count", {"generation": "2"}) == before + 1
    finally:
        timer.remove()
    assert timer not in gc.callbacks
