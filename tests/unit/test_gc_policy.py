"""The operator's garbage-collection policy, in virtual time, and its pause metric."""

from __future__ import annotations

import asyncio
import gc
import weakref

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
        (1.0, "collect"),  # what is not frozen yet: its garbage is never frozen
        (1.0, "freeze"),
        (2.0, "collect"),
        (2.0, "freeze"),
        (3.0, "unfreeze"),  # 2.5 s since the start: everything is collected once...
        (3.0, "collect"),
        (3.0, "freeze"),  # ...and frozen again
        (4.0, "collect"),
        (4.0, "freeze"),
    ]


async def test_cyclic_garbage_made_before_a_freeze_is_collected_not_frozen() -> None:
    """A refused input's exception refers to its traceback, which refers back to it: a cycle only
    the collector frees. Frozen, it stayed until the next full collection (the benchmark's RSS grew)."""

    class Node:
        pass

    ticks = [0]

    async def sleep(seconds: float) -> None:
        ticks[0] += 1
        if ticks[0] > 1:
            raise asyncio.CancelledError

    gc.disable()  # no automatic collection between making the garbage and the freeze
    try:
        cycle = Node()
        cycle.me = cycle  # type: ignore[attr-defined]
        alive = weakref.ref(cycle)
        del cycle
        with pytest.raises(asyncio.CancelledError):
            await gc_policy.keep_collections_short(10.0, sleep=sleep)
        assert alive() is None, "the cycle was frozen instead of collected"
    finally:
        gc.unfreeze()
        gc.enable()


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
