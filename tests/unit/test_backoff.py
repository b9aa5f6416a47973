"""Retry delays: exponential, jittered within bounds, capped, Retry-After respected."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workerpool.decide.backoff import CAP_SECONDS, MAX_RETRY_AFTER, Backoff, parse_retry_after


def test_doubles_from_one_second_up_to_the_cap() -> None:
    b = Backoff()
    # With the lowest draw the delay is half the step: 0.5, 1, 2, 4, ... up to cap / 2.
    assert [b.next_delay(0.0) for _ in range(8)] == [0.5, 1, 2, 4, 8, 15, 15, 15]


def test_a_success_starts_over() -> None:
    b = Backoff()
    for _ in range(5):
        b.next_delay(0.5)
    b.reset()
    assert b.next_delay(0.0) == 0.5


@given(failures=st.integers(min_value=1, max_value=200), draw=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_jitter_stays_within_half_a_step_and_the_cap(failures: int, draw: float) -> None:
    b = Backoff()
    for _ in range(failures - 1):
        b.next_delay(0.0)
    step = min(CAP_SECONDS, 2 ** (failures - 1))
    delay = b.next_delay(draw)
    assert step / 2 <= delay <= step
    assert delay <= CAP_SECONDS


def test_retry_after_is_respected_even_beyond_the_cap_but_bounded() -> None:
    assert Backoff().next_delay(0.0, retry_after=7) == 7  # longer than the first step: the server's wish
    assert Backoff().next_delay(0.9, retry_after=0.1) > 0.1  # shorter: the backoff's own delay
    assert Backoff().next_delay(0.0, retry_after=45) == 45  # beyond the cap: still obeyed
    assert Backoff().next_delay(0.0, retry_after=10_000) == MAX_RETRY_AFTER


def test_retry_after_header_values() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(" 1 ") == 1
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None  # HTTP-date: not what APF sends
    assert parse_retry_after("-1") is None
