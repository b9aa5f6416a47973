"""A client-side token bucket for the operator's writes to the API server.

A burst (1000 pools created at once, every pool's status after an outage)
must not reach the API server all at once: its priority and fairness would
queue or reject (429) the lot, the operator's watches and reads included.
client-go gives every controller the same protection (QPS/burst); the
defaults here are sized for 1000 pools (docs/operator.md, "API writes").

`TokenBucket` is pure (time in, seconds to wait out). `WriteLimiter` queues
the writers that find the bucket empty and serves them by priority, then
namespace by namespace in turn (`FairQueue`), each namespace's in order of
arrival: a new pool's first pod never waits behind a thousand status writes,
and one namespace's churn cannot starve another's writes. A status write loses nothing by waiting: its content is
rendered when its turn comes (`StatusWriter`), so the wait coalesces changes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from . import metrics


class Priority(IntEnum):
    """Lower goes first."""

    POD = 0  # creating and deleting workers: what users and executions wait for
    # A round posts its Events before it creates pods: behind the marks, a new pool's
    # ScalingUp Event (and so its first pod) waited for every queued mark (bench/scale_bench.py).
    EVENT = 1
    MARK = 2  # a busy worker's node-autoscaler annotations (decide/disruption.py)
    STATUS = 3  # rendered when its turn comes, so waiting only coalesces


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

    def _refill(self, now: float) -> None:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def delay(self, now: float) -> float:
        """Take one token at `now`; the seconds the caller must wait before it may act (0: at once).

        The token is taken even when the answer is a wait (the balance goes
        negative), so callers asking one after another queue up behind each other.
        """
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def try_take(self, now: float) -> bool:
        """Take one token if one is there now; never goes into debt."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FairQueue:
    """Waiters by priority, and within one priority by tenant (a namespace) in turn: a tenant
    with a thousand writes queued waits its turn like one with a single write, so one pool (or
    one team) cannot starve the others of the write budget they all share."""

    def __init__(self) -> None:
        # priority -> tenant -> its waiters in order of arrival; the dict's order is the rotation.
        self._queues: dict[int, dict[str, collections.deque[asyncio.Future[None]]]] = {}

    def __len__(self) -> int:
        return sum(1 for tenants in self._queues.values() for q in tenants.values() for f in q if not f.done())

    def push(self, priority: int, tenant: str, turn: asyncio.Future[None]) -> None:
        self._queues.setdefault(priority, {}).setdefault(tenant, collections.deque()).append(turn)

    def pop(self) -> asyncio.Future[None] | None:
        """The next waiter: the highest priority's next tenant in rotation (that tenant goes last)."""
        for priority in sorted(self._queues):
            tenants = self._queues[priority]
            while tenants:
                tenant = next(iter(tenants))
                waiters = tenants.pop(tenant)
                while waiters and waiters[0].done():  # cancelled while waiting
                    waiters.popleft()
                if not waiters:
                    continue
                turn = waiters.popleft()
                if waiters:
                    tenants[tenant] = waiters  # back of the rotation
                return turn
            del self._queues[priority]
        return None


class WriteLimiter:
    def __init__(
        self,
        bucket: TokenBucket,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bucket, self.clock, self.sleep = bucket, clock, sleep
        self._waiting = FairQueue()
        self._server: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def acquire(self, priority: Priority = Priority.POD, tenant: str = "") -> None:
        """Return when this write may go: at once while tokens last and nobody waits, else in turn
        (by priority, then `tenant` by `tenant`)."""
        if not self._waiting and self.bucket.try_take(self.clock()):
            return
        started = self.clock()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.push(priority, tenant, turn)
        if self._server is None or self._server.done():
            self._server = asyncio.create_task(self._serve(), name="api-write-limiter")
        await turn  # a cancelled waiter's future is cancelled too; `_serve` skips it
        metrics.API_WRITE_WAIT.observe(self.clock() - started)

    async def _serve(self) -> None:
        """Hand out tokens at the bucket's rate, highest priority first, tenants in turn."""
        while (turn := self._waiting.pop()) is not None:
            wait = self.bucket.delay(self.clock())
            if wait > 0:
                await self.sleep(wait)
            if not turn.done():
                turn.set_result(None)
