"""The Redis hub's health: one error per loop, reported in a fixed order, each cleared
only by its own loop (so an outage is one stable message, and recovery needs every loop)."""

from __future__ import annotations

from workerpool.controller.redis_hub import LoopHealth, describe_error


def test_an_outage_reads_as_one_stable_message_whatever_loop_failed_last() -> None:
    health = LoopHealth()
    assert health.record("resync", "resync failed: ConnectionError") == "resync failed: ConnectionError"
    first = health.record("queues", "ConnectionError: refused")
    assert first == "ConnectionError: refused"  # the queues loop comes first in the order
    # The other loops failing again, in any order, do not change what is reported.
    assert health.record("heartbeats", "heartbeat subscription failed: ConnectionError") == first
    assert health.record("resync", "resync failed: ConnectionError") == first


def test_recovery_needs_every_loop_and_one_loop_cannot_clear_another() -> None:
    health = LoopHealth()
    health.record("heartbeats", "heartbeat subscription failed: ConnectionError")
    health.record("queues", "ConnectionError: refused")
    # The queue poller succeeds: the subscription is still broken, and says so.
    assert health.record("queues", None) == "heartbeat subscription failed: ConnectionError"
    assert health.record("heartbeats", None) is None


def test_error_text_never_carries_the_url() -> None:
    url = "redis://:p@ss@redis.example:6379/0"
    text = describe_error(ConnectionError(f"cannot reach {url}"), url)
    assert "p@ss" not in text and "redis.example:6379" in text
