"""The Redis hub's health: one fault per loop, reported in a fixed order, each cleared
only by its own loop (so an outage is one stable message, and recovery needs every loop);
each fault typed by what went wrong (the condition's reason), its text free of secrets."""

from __future__ import annotations

import ssl

import pytest
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import AuthenticationError, NoPermissionError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError

from workerpool.controller.adapters.redis_hub import SETTLE_SECONDS, LoopHealth, ResyncGate
from workerpool.controller.ports import Fault
from workerpool.redis_connect import Problem, RedisAccess, classify, describe

REFUSED = Fault(Problem.UNAVAILABLE, "queue reading failed: ConnectionError: refused")
RESYNC = Fault(Problem.UNAVAILABLE, "resync failed: ConnectionError")
SUBSCRIPTION = Fault(Problem.UNAVAILABLE, "heartbeat subscription failed: ConnectionError")


def test_an_outage_reads_as_one_stable_message_whatever_loop_failed_last() -> None:
    health = LoopHealth()
    assert health.record("resync", RESYNC) == RESYNC
    assert health.record("queues", REFUSED) == REFUSED  # the queues loop comes first in the order
    # The other loops failing again, in any order, do not change what is reported.
    assert health.record("heartbeats", SUBSCRIPTION) == REFUSED
    assert health.record("resync", RESYNC) == REFUSED


def test_recovery_needs_every_loop_and_one_loop_cannot_clear_another() -> None:
    health = LoopHealth()
    health.record("heartbeats", SUBSCRIPTION)
    health.record("queues", REFUSED)
    # The queue poller succeeds: the subscription is still broken, and says so.
    assert health.record("queues", None) == SUBSCRIPTION
    assert health.record("heartbeats", None) is None


def test_error_text_never_carries_the_url_or_the_password() -> None:
    url = "redis://:p@ss@redis.example:6379/0"
    text = describe(RedisConnectionError(f"cannot reach {url}"), RedisAccess(url))
    assert "p@ss" not in text and "cannot reach ***" in text
    sentinel = RedisAccess("redis+sentinel://u:s3cret@s1:26379/m")
    assert "s3cret" not in describe(RedisConnectionError("AUTH u s3cret refused"), sentinel)
    assert "s3cret" not in repr(sentinel) and "s3cret" not in repr(sentinel.target)


REFUSED_TEXT = "Error 111 connecting to 10.0.0.1:6379. Connection refused."


def _verify_failed() -> RedisConnectionError:
    try:
        raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    except ssl.SSLError as exc:
        return RedisConnectionError(f"Error 1 connecting to 10.0.0.1:6380. {exc}.")


@pytest.mark.parametrize(
    ("exc", "sentinel", "problem"),
    [
        (RedisConnectionError(REFUSED_TEXT), False, Problem.UNAVAILABLE),
        (RedisConnectionError(REFUSED_TEXT), True, Problem.FAILOVER),
        (MasterNotFoundError("No master found for 'm'"), True, Problem.FAILOVER),
        (ReadOnlyError("You can't write against a read only replica."), False, Problem.FAILOVER),
        (_verify_failed(), False, Problem.TLS),
        (_verify_failed(), True, Problem.TLS),
        (AuthenticationError("invalid username-password pair or user is disabled."), True, Problem.AUTH),
        (NoPermissionError("User op has no permissions to run the 'zcard' command"), True, Problem.PERMISSION),
        (OSError("Connection reset by peer"), False, Problem.UNAVAILABLE),
    ],
)
def test_each_error_is_classified_by_what_went_wrong(exc: BaseException, sentinel: bool, problem: Problem) -> None:
    assert classify(exc, sentinel) is problem


def test_a_permission_error_names_the_command() -> None:
    text = describe(
        NoPermissionError("User op has no permissions to run the 'zcard' command"), RedisAccess("redis://r")
    )
    assert "'zcard'" in text


def test_after_a_reconnect_only_a_full_resync_started_after_the_settle_clears_the_fault() -> None:
    gate = ResyncGate(full_next=False)
    gate.reconnected(now=100.0)
    # A resync that starts too early (the timer's) is full but does not count...
    assert gate.take(now=100.5) is True and not gate.trusts(started=100.5)
    # ...and owes a full one after the settle, which does.
    assert gate.full_next and gate.take(now=100.0 + SETTLE_SECONDS) is True
    assert gate.trusts(started=100.0 + SETTLE_SECONDS)
    # Later resyncs read only what pub/sub missed.
    assert gate.take(now=200.0) is False


def test_a_failed_full_resync_is_still_owed() -> None:
    gate = ResyncGate(full_next=False)
    gate.reconnected(now=0.0)
    full = gate.take(now=SETTLE_SECONDS)
    gate.failed(full)
    assert gate.full_next and not gate.trusts(started=SETTLE_SECONDS)
