"""The API write limiter: a token bucket, checked with plain time values and a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.controller.ratelimit import TokenBucket, WriteLimiter


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


async def test_the_limiter_sleeps_what_the_bucket_says() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = WriteLimiter(TokenBucket(rate=2, burst=1), clock=lambda: 5.0, sleep=sleep)
    for _ in range(3):
        await limiter.acquire()
    assert slept == [0.5, 1.0]


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=10)
