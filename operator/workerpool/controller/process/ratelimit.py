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

The bucket bounds the rate; `max_in_flight` bounds the writes the API server
holds at once. Without it, when the server takes writes slower than the
bucket allows (a slow day: 36 status patches a second against the budget's
100), every write the bucket lets through waits in the server's own queue,
where priority and fairness sees one flow (the operator's ServiceAccount) and
serves it first come, first served: a new pool's first pod waited there
behind hundreds of status writes whatever the client's priority said
(bench/scale_bench.py, docs/performance.md). With a few writes in flight the
backlog stays here, where creates go first and each status write is rendered
when it leaves, so a slower server means coalesced status, not later pods.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from . import metrics

log = logging.getLogger(__name__)
BEHIND_SECONDS = 10.0  # a write that waited this long for its turn: the operator is behind


class Priority(IntEnum):
    """Lower goes first."""

    POD = 0  # creating and deleting workers: what users and executions wait for
    # A round posts its Events before it creates pods: behind the marks, a new pool's
    # ScalingUp Event (and so its first pod) waited for every queued mark (bench/scale_bench.py).
    EVENT = 1
    MARK = 2  # a busy worker's node-autoscaler annotations (decide/disruption.py)
    STATUS = 3  # rendered when its turn comes, so waiting only coalesces
    # A busy mark's removal: the one write that can wait (the pod stays protected a while longer),
    # and one still waiting when its worker turns busy again is not sent at all.
    UNMARK = 4


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

    def give_back(self) -> None:
        """A token taken for a write that was not sent after all (nothing left to write at its turn)."""
        self.tokens = min(self.burst, self.tokens + 1)

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
        self._size = 0  # kept, not counted: every write asks (a thousand queued made each ask O(n))

    def __len__(self) -> int:
        """Waiters queued (a cancelled one until the queue reaches it)."""
        return self._size

    def push(self, priority: int, tenant: str, turn: asyncio.Future[None]) -> None:
        self._queues.setdefault(priority, {}).setdefault(tenant, collections.deque()).append(turn)
        self._size += 1

    def pop(self) -> asyncio.Future[None] | None:
        """The next waiter: the highest priority's next tenant in rotation (that tenant goes last)."""
        for priority in sorted(self._queues):
            tenants = self._queues[priority]
            while tenants:
                tenant = next(iter(tenants))
                waiters = tenants.pop(tenant)
                while waiters and waiters[0].done():  # cancelled while waiting
                    waiters.popleft()
                    self._size -= 1
                if not waiters:
                    continue
                turn = waiters.popleft()
                self._size -= 1
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
        max_in_flight: int = 0,  # 0: no limit
    ) -> None:
        if max_in_flight < 0:
            raise ValueError("max_in_flight must be >= 0")
        self.bucket, self.clock, self.sleep, self.max_in_flight = bucket, clock, sleep, max_in_flight
        self.in_flight = 0
        self._waiting = FairQueue()
        self._freed = asyncio.Event()
        self._server: asyncio.Task[None] | None = None
        self._warned_at = float("-inf")

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def write(self, priority: Priority = Priority.POD, tenant: str = "") -> AsyncIterator[None]:
        """Hold a turn for one write to the API server, from its turn until it returns."""
        await self._turn(priority, tenant)
        try:
            yield
        finally:
            self._release()

    def unused(self) -> None:
        """The write whose turn this is sent nothing (its content was undone while it waited): its
        token goes back, so the budget is spent on requests, not on turns."""
        self.bucket.give_back()

    async def acquire(self, priority: Priority = Priority.POD, tenant: str = "") -> None:
        """Return when a write may go (its turn given back at once: for writes that never say when they end)."""
        async with self.write(priority, tenant):
            pass

    def _release(self) -> None:
        self.in_flight -= 1
        metrics.API_WRITES_IN_FLIGHT.set(self.in_flight)
        self._freed.set()

    async def _turn(self, priority: Priority, tenant: str) -> None:
        """At once while tokens (and in-flight room) last and nobody waits, else in turn
        (by priority, then `tenant` by `tenant`)."""
        idle = not self._waiting and (self._server is None or self._server.done())
        if idle and self._room() and self.bucket.try_take(self.clock()):
            self._granted()
            return
        started = self.clock()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.push(priority, tenant, turn)
        metrics.API_WRITES_QUEUED.set(len(self._waiting))
        self._ensure_server()
        try:
            await turn  # a cancelled waiter's future is cancelled too; `_serve` skips it
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # granted, then cancelled before it ran
                self._release()
            raise
        waited = self.clock() - started
        metrics.API_WRITE_WAIT.observe(waited)
        self._warn_if_behind(waited)

    def _warn_if_behind(self, waited: float) -> None:
        """A log line (at most one a minute) when writes wait long: the API server takes them
        slower than the budget, so status lags (pods still go first); the gauges say how much."""
        now = self.clock()
        if waited < BEHIND_SECONDS or now - self._warned_at < 60:
            return
        self._warned_at = now
        log.warning(
            "API writes are behind: a write waited %.1f s for its turn, %d queued, %d in flight "
            "(the API server answers slower than the write budget; status writes are coalesced, pods go first)",
            waited,
            len(self._waiting),
            self.in_flight,
        )

    def _ensure_server(self) -> None:
        if self._server is None or self._server.done():
            self._server = asyncio.create_task(self._serve(), name="api-write-limiter")
            self._server.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        """Supervision: a server that failed (a bug) is logged and started again while writers wait."""
        if not task.cancelled() and task.exception() is not None:
            log.error("the API write limiter failed; starting it again", exc_info=task.exception())
            if self._waiting:
                self._ensure_server()

    def _room(self) -> bool:
        return not self.max_in_flight or self.in_flight < self.max_in_flight

    def _granted(self) -> None:
        self.in_flight += 1
        metrics.API_WRITES_IN_FLIGHT.set(self.in_flight)

    async def _serve(self) -> None:
        """Hand out turns at the bucket's rate, highest priority first, tenants in turn, never
        more writes in flight than `max_in_flight`."""
        while self._waiting:
            if not self._room():
                self._freed.clear()
                await self._freed.wait()
                continue
            turn = self._waiting.pop()
            metrics.API_WRITES_QUEUED.set(len(self._waiting))
            if turn is None:  # only cancelled waiters were left
                continue
            try:
                wait = self.bucket.delay(self.clock())
                if wait > 0:
                    await self.sleep(wait)
            except Exception as exc:
                if not turn.done():
                    turn.set_exception(exc)  # its writer fails with it rather than waiting forever
                raise
            if not turn.done():
                self._granted()
                turn.set_result(None)
