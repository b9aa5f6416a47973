"""Durable writes wait for one replica, but a primary with none (it lost its only replica to
the failover) must not make every write pay the timeout: one miss skips the wait a while."""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from workerpool.redis_connect import ReplicaAck


class FakeWait:
    def __init__(self, replicas: int) -> None:
        self.replicas, self.calls = replicas, 0

    async def wait(self, num: int, timeout_ms: int) -> int:
        self.calls += 1
        return self.replicas


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ack(client: FakeWait, clock: Clock, enabled: bool = True) -> ReplicaAck:
    return ReplicaAck(cast(aioredis.Redis, cast(Any, client)), enabled, clock=clock, skip_seconds=10)


async def test_without_replicas_expected_nothing_waits() -> None:
    client = FakeWait(0)
    assert await ack(client, Clock(), enabled=False)() and client.calls == 0


async def test_an_acknowledged_write_is_durable_every_time() -> None:
    client, clock = FakeWait(1), Clock()
    check = ack(client, clock)
    assert all([await check() for _ in range(3)]) and client.calls == 3


async def test_a_miss_skips_the_wait_for_a_while_then_tries_again() -> None:
    client, clock = FakeWait(0), Clock()
    check = ack(client, clock)
    assert not await check() and client.calls == 1
    clock.now = 9.9
    assert not await check() and client.calls == 1  # skipped: no second timeout paid
    client.replicas, clock.now = 1, 10.1
    assert await check() and client.calls == 2
