"""The API write limiter: a token bucket, checked with plain time values and a property."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.controller.process.ratelimit import Priority, TokenBucket, WriteLimiter


def test_a_burst_goes_at_once_then_writes_are_spaced_at_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.delay(0.0) for _ in range(3)] == [0, 0, 0]
    assert [round(bucket.delay(0.0), 3) for _ in range(3)] == [0.1, 0.2, 0.3]  # queued behind each other


def test_quiet_time_refills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        bucket.delay(0.0)
    assert bucket.delay(100.0) == 0  # refilled...
    assert [bucket.delay(100.0) for _ in range(2)] == [0, 0]
    assert bucket.delay(100.0) > 0  # ...to 3, not to 1000


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 500),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_no_window_ever_sees_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket, now, starts = TokenBucket(rate=rate, burst=burst), 0.0, []
    for gap in gaps:
        now += gap
        starts.append(now + bucket.delay(now))
    starts.sort()
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= burst + rate * window + 1e-6


class VirtualTime:
    """A clock that the limiter's sleeps move forward (no real waiting)."""

    def __init__(self) -> None:
        self.now = 5.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let the waiters that were served run


async def test_writers_past_the_burst_wait_at_the_rate() -> None:
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=2, burst=1), clock=time.clock, sleep=time.sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(3)))
    assert time.slept == [0.5, 0.5]  # the first at once, then one each half second


async def test_queued_pod_writes_go_before_queued_status_writes_then_in_order_of_arrival() -> None:
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=10, burst=1), clock=time.clock, sleep=time.sleep)
    order: list[str] = []

    async def write(what: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(what)

    await limiter.acquire(Priority.STATUS)  # the bucket is empty now
    tasks = [asyncio.create_task(write(f"status-{i}", Priority.STATUS)) for i in range(3)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(write(f"pod-{i}", Priority.POD)) for i in range(2)]
    tasks.append(asyncio.create_task(write("event", Priority.EVENT)))
    await asyncio.gather(*tasks)
    # The first status write had already taken its turn's token when the pods came.
    assert order == ["status-0", "pod-0", "pod-1", "event", "status-1", "status-2"]
    assert limiter.queued == 0


async def test_one_namespaces_backlog_does_not_starve_another_namespaces_writes() -> None:
    """Before: first come, first served within a priority, so a namespace that queued 100
    status writes made every other namespace's wait behind all of them (10 s at 10/s)."""
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=10, burst=1), clock=time.clock, sleep=time.sleep)
    order: list[str] = []

    async def write(tenant: str, i: int) -> None:
        await limiter.acquire(Priority.STATUS, tenant)
        order.append(f"{tenant}-{i}")

    await limiter.acquire(Priority.STATUS, "noisy")  # the bucket is empty now
    tasks = [asyncio.create_task(write("noisy", i)) for i in range(100)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(write("quiet", i)) for i in range(2)]
    await asyncio.gather(*tasks)
    assert order.index("quiet-0") <= 2 and order.index("quiet-1") <= 4, order[:6]
    assert [o for o in order if o.startswith("noisy")] == [f"noisy-{i}" for i in range(100)]  # in order


async def test_a_cancelled_waiter_leaves_the_queue_and_the_rest_are_served() -> None:
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=10, burst=1), clock=time.clock, sleep=time.sleep)
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire(Priority.POD))
    kept = asyncio.create_task(limiter.acquire(Priority.STATUS))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(kept, timeout=5)
    assert gone.cancelled() and limiter.queued == 0


async def test_a_slow_server_keeps_the_backlog_here_where_pods_go_before_status() -> None:
    """At most `max_in_flight` writes wait in the API server; the rest wait here, by priority.

    Before: the bucket alone let every write through at its rate, so on a server slower
    than the budget they queued there, first come first served, and a pod create waited
    behind every status write sent before it."""
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=1000, burst=1000), clock=time.clock, sleep=time.sleep, max_in_flight=2)
    server: list[asyncio.Future[None]] = []  # the requests the API server holds, answered by the test
    sent: list[str] = []
    peak = 0

    async def write(what: str, priority: Priority) -> None:
        nonlocal peak
        async with limiter.write(priority, "ns"):
            sent.append(what)
            peak = max(peak, limiter.in_flight)
            answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            server.append(answer)
            await answer

    tasks = [asyncio.create_task(write(f"status-{i}", Priority.STATUS)) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(write("pod", Priority.POD)))
    for _ in range(6):
        for _ in range(5):
            await asyncio.sleep(0)
        server.pop(0).set_result(None)  # the server answers the oldest request
    await asyncio.gather(*tasks)
    assert peak == 2
    assert sent[:3] == ["status-0", "status-1", "pod"], sent  # the pod went at the first free turn
    assert limiter.in_flight == 0 and limiter.queued == 0


async def test_a_turn_is_given_back_when_the_write_fails() -> None:
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=1000, burst=1000), clock=time.clock, sleep=time.sleep, max_in_flight=1)
    with pytest.raises(RuntimeError):
        async with limiter.write():
            raise RuntimeError("the API server said no")
    async with limiter.write():  # would wait forever if the failed write kept its turn
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0


async def test_a_writer_cancelled_as_its_turn_came_gives_the_turn_back() -> None:
    """Granted and cancelled before it ran (a pool deleted mid-round): its turn is not leaked."""
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=1000, burst=1000), clock=time.clock, sleep=time.sleep, max_in_flight=1)
    async with limiter.write():
        waiter = asyncio.create_task(limiter.write().__aenter__())
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first write ended: the limiter grants the waiter its turn...
    assert limiter.in_flight == 1
    waiter.cancel()  # ...and it is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    async with asyncio.timeout(5):
        async with limiter.write():  # a leaked turn would make this wait forever
            pass


class BrokenOnce(TokenBucket):
    """A bucket whose first queued turn fails (a bug in the server loop, say)."""

    failed = False

    def delay(self, now: float) -> float:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug")
        return super().delay(now)


async def test_a_failed_limiter_loop_is_started_again_and_serves_who_waits() -> None:
    time = VirtualTime()
    limiter = WriteLimiter(BrokenOnce(rate=10, burst=1), clock=time.clock, sleep=time.sleep)
    await limiter.acquire()  # the bucket is empty now: the next writers queue
    writers = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
    async with asyncio.timeout(5):
        results = await asyncio.gather(*writers, return_exceptions=True)
    # The write whose turn failed fails (it does not wait forever); the next one is served.
    assert [type(r).__name__ for r in results] == ["RuntimeError", "NoneType"]


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=10)
    with pytest.raises(ValueError, match="max_in_flight"):
        WriteLimiter(TokenBucket(rate=1, burst=1), clock=lambda: 0.0, max_in_flight=-1)


async def test_a_long_wait_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    time = VirtualTime()
    limiter = WriteLimiter(TokenBucket(rate=0.05, burst=1), clock=time.clock, sleep=time.sleep)  # 20 s a write
    await asyncio.gather(*(limiter.acquire(Priority.STATUS) for _ in range(3)))  # two wait 20 s or more
    warnings = [r.getMessage() for r in caplog.records if "API writes are behind" in r.getMessage()]
    assert len(warnings) == 1, warnings  # two long waits within a minute: one line


async def test_a_turn_that_sends_nothing_gives_its_token_back() -> None:
    """A status write undone while it waited, a mark removal no longer wanted: the budget is for
    requests the API server gets, not for turns."""
    clock = [0.0]
    limiter = WriteLimiter(TokenBucket(rate=1.0, burst=2), lambda: clock[0])
    async with limiter.write(Priority.STATUS):
        limiter.unused()
    async with limiter.write(Priority.STATUS):
        pass
    assert limiter.bucket.try_take(clock[0])  # one token left: the unused turn's
    assert not limiter.bucket.try_take(clock[0])
