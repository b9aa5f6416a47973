"""The operator's background loops: started under one supervisor, and stopped.

Every long-running loop (a hub's heartbeat, resync and queue loops, a broker's poll,
the leader's renewals, the webhook's certificate keeper, each pool's loop) expects
its own errors and retries them. Anything else that escapes (a bug, an input nobody
foresaw) must not end the loop silently, which would leave every pool that depends
on it with its last reading forever: `supervise` logs the traceback (at a bounded
rate), counts it (`workerpool_loop_crashes_total{loop}`), tells the owner (which
shows it on the pools it affects until the loop succeeds again), and starts the loop
again after a backoff that doubles up to a minute and resets once it has run well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from . import metrics
from .lograte import RateLimitedLog

log = logging.getLogger(__name__)

# How long one round of cancellation is given before it is repeated.
CANCEL_GRACE_SECONDS = 1.0
# A crashed loop starts again after this much, doubled per crash in a row, up to the cap;
# a loop that ran this long before crashing is starting afresh (the first delay again).
RESTART_SECONDS, RESTART_CAP_SECONDS, HEALTHY_SECONDS = 0.5, 60.0, 120.0

_crash_log = RateLimitedLog(log, interval=30.0)

Crashed = Callable[[BaseException], object]


def supervise(
    name: str, kind: str, body: Callable[[], Awaitable[None]], on_crash: Crashed | None = None
) -> asyncio.Task[None]:
    """A task that runs `body` until it returns, restarting it when it raises (`kind`: the
    metric's label, one per kind of loop; `name`: the task's, for logs)."""
    return asyncio.create_task(_supervised(name, kind, body, on_crash), name=name)


async def _supervised(name: str, kind: str, body: Callable[[], Awaitable[None]], on_crash: Crashed | None) -> None:
    loop = asyncio.get_running_loop()
    delay = RESTART_SECONDS
    while True:
        started = loop.time()
        try:
            await body()
            return
        except Exception as exc:
            metrics.LOOP_CRASHES.labels(loop=kind).inc()
            _crash_log.warning(kind, "loop %s crashed; restarting it in %.1f s", name, delay, exc_info=exc)
            if on_crash is not None:
                try:
                    on_crash(exc)
                except Exception:
                    log.exception("loop %s: telling its crash failed", name)
        if loop.time() - started >= HEALTHY_SECONDS:
            delay = RESTART_SECONDS
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_CAP_SECONDS)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again while any runs on.

    A single cancel() is not enough: a cancellation that lands as a client library's own
    timeout fires can come out as TimeoutError (an OSError, caught by every retry loop here),
    and the loop goes on as if nothing was asked (a teardown hung on it). Each round asks again.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
