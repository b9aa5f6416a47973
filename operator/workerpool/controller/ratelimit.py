"""A client-side token bucket for the operator's writes to the API server.

A burst (1000 pools created at once, every pool's status after an outage)
must not reach the API server all at once: its priority and fairness would
queue or reject (429) the lot, the operator's watches and reads included.
client-go gives every controller the same protection (QPS/burst); the
defaults here are sized for 1000 pools (docs/operator.md, "API writes").

`delay()` is pure (time in, seconds to wait out); `acquire()` sleeps it.
Waiters are served in order: the bucket is a queue, not a race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import metrics


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # the bucket's size: this many writes may go at once after a quiet time
    tokens: float = field(init=False)
    at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.tokens = self.burst

    def delay(self, now: float) -> float:
        """Take one token at `now`; the seconds the caller must wait before it may act (0: at once).

        The token is taken even when the answer is a wait (the balance goes
        negative), so callers asking one after another queue up behind each other.
        """
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class WriteLimiter:
    def __init__(
        self,
        bucket: TokenBucket,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bucket, self.clock, self.sleep = bucket, clock, sleep

    async def acquire(self) -> None:
        wait = self.bucket.delay(self.clock())
        if wait > 0:
            metrics.API_WRITE_WAIT.observe(wait)
            await self.sleep(wait)
