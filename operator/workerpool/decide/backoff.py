"""Retry delays after a failed reconcile: exponential, jittered, capped, and never
shorter than what the API server asked for (a 429's Retry-After). Pure: the
caller passes the random draw and sleeps."""

from __future__ import annotations

from dataclasses import dataclass

BASE_SECONDS = 1.0
CAP_SECONDS = 30.0
# The longest Retry-After obeyed as given: a server asking for more is still
# retried after this (the pool must notice when the server is back).
MAX_RETRY_AFTER = 120.0


@dataclass
class Backoff:
    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS
    failures: int = 0

    def next_delay(self, draw: float, retry_after: float | None = None) -> float:
        """The delay before the next attempt after one more failure; `draw` is uniform in [0, 1).

        "Equal jitter": half the exponential step is fixed, half random, so pools that
        failed together spread out but none retries sooner than half its step.
        """
        self.failures += 1
        step = min(self.cap, self.base * 2 ** min(self.failures - 1, 32))
        delay = step / 2 + draw * step / 2
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return float(delay)

    def reset(self) -> None:
        self.failures = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the API server sends delta-seconds); None if absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
