"""Waiting with a named deadline: the only way tests wait (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    fn: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `fn` until it returns something truthy; exceptions in `tolerate` count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = fn()
        except tolerate as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


async def async_wait_until(fn: Callable[[], T | None], *, within: float, what: str, interval: float = 0.02) -> T:
    """`wait_until` for code under test that runs on this event loop: polls without blocking it."""
    deadline = time.monotonic() + within
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
