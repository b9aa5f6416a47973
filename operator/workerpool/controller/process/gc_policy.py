"""Garbage collection without long pauses.

At 1000 pools the operator holds 10,000 workers' reports, their pod views and
Kopf's per-object state. CPython's automatic full collection traverses all of it
with the event loop stopped: 0.5-1 s, several times a minute at that scale
(docs/performance.md), and every pool's round and every webhook answer waits.
`gc.freeze()` moves the objects alive now into a permanent generation that
automatic collections skip; freezing every `freeze_seconds` keeps those small
(at 1000 pools, freezing every 60 s left full collections of 0.3 s; every 10 s,
of 0.1 s).
Cyclic garbage among frozen objects is reclaimed by one collection of everything
(unfreeze, collect) every `full_seconds`: one pause then, not several a minute.

Each freeze is preceded by a collection of what is not frozen yet (what survived
since the last freeze: cheap, the frozen bulk is skipped). Freezing without it
moved the cyclic garbage of those seconds into the permanent generation until
the next full collection: under a flood of refused input (each refusal an
exception whose traceback refers back to it) the operator's RSS grew about 2 MiB
a minute (bench/hostile_input_bench.py); the hub alone fed the same inputs grew
79 -> 103 MiB in 3 minutes with freezes, and stayed at 77 -> 82 MiB with this.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import metrics

FULL_SECONDS = 1800.0


async def keep_collections_short(
    freeze_seconds: float,
    full_seconds: float = FULL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    last_full = clock()
    while True:
        await sleep(freeze_seconds)
        if clock() - last_full >= full_seconds:
            gc.unfreeze()
            last_full = clock()
        gc.collect()  # only the unfrozen objects (all of them after an unfreeze)
        gc.freeze()


class PauseTimer:
    """`workerpool_gc_pause_seconds{generation}`: how long each collection stopped everything."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = self.clock()
        else:
            metrics.GC_PAUSE.labels(str(info.get("generation", "?"))).observe(self.clock() - self.started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
