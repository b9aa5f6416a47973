"""Stopping the adapters' background loops."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# How long one round of cancellation is given before it is repeated.
CANCEL_GRACE_SECONDS = 1.0


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
