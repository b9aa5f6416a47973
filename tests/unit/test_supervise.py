"""`supervise`: a loop that raises something unexpected is restarted (its crash counted and
told), one that returns is done, and a cancelled one stays cancelled."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from workerpool.controller.process.tasks import cancel_and_wait, supervise


def crashes(kind: str) -> float:
    return REGISTRY.get_sample_value("workerpool_loop_crashes_total", {"loop": kind}) or 0.0


async def test_a_crashed_loop_is_told_counted_and_started_again_until_it_returns() -> None:
    runs: list[int] = []
    told: list[str] = []

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise KeyError("a bug")

    before = crashes("test-loop")
    task = supervise("t", "test-loop", body, lambda exc: told.append(type(exc).__name__))
    await asyncio.wait_for(task, timeout=5)
    assert runs == [0, 1]
    assert told == ["KeyError"]
    assert crashes("test-loop") == before + 1


async def test_a_failing_telling_does_not_stop_the_restart() -> None:
    runs: list[int] = []

    async def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first")

    def tell(exc: BaseException) -> None:
        raise RuntimeError("the owner's own bug")

    await asyncio.wait_for(supervise("t", "test-tell", body, tell), timeout=5)
    assert len(runs) == 2


async def test_cancelling_a_supervised_loop_ends_it() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = supervise("t", "test-cancel", forever)
    await asyncio.wait_for(started.wait(), timeout=5)
    await cancel_and_wait([task])
    assert task.cancelled()
