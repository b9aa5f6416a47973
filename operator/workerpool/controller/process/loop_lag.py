"""How late the event loop wakes a timer. Everything the operator does shares one
asyncio loop, so one long synchronous step (a resync over 10,000 workers, a garbage
collection, a burst of watch events) delays every pool at once: this shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from . import metrics

INTERVAL = 0.25


async def watch_loop_lag(
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    while True:
        started = clock()
        await sleep(INTERVAL)
        metrics.LOOP_LAG.observe(max(0.0, clock() - started - INTERVAL))
