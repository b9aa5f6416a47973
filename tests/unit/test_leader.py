"""Leader election on a Lease, in virtual time: one leader at a time, takeover after
the holder is gone, a leader that cannot renew stops before its lease can be taken."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from typing import Any

import pytest

from devcluster.waiting import async_wait_until
from workerpool.controller.adapters.kube import ApiException
from workerpool.controller.ha.leader import LeaderElector, LeaseTiming
from workerpool.controller.ha.leadership import Leadership
from workerpool.controller.process.config import OperatorConfig
from workerpool.decide.shards import Shard

TIMING = LeaseTiming(duration=15.0, renew_deadline=10.0, retry_period=2.0)


class VirtualTime:
    """A clock and a sleep that only move when the test says so, in order of the timers."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self.seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_790_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self.timers, (self.now + seconds, next(self.seq), fut))
        await fut

    async def run_until(self, until: float) -> None:
        while True:
            for _ in range(20):
                await asyncio.sleep(0)
            if not self.timers or self.timers[0][0] > until:
                self.now = until
                return
            at, _, fut = heapq.heappop(self.timers)
            self.now = at
            if not fut.done():
                fut.set_result(None)


class FakeLeases:
    """One Lease with resourceVersion semantics: a stale write gets a 409."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing: set[str] = set()  # identities whose writes fail (a partitioned replica)

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    async def write_lease(self, namespace: str, name: str, body: dict[str, Any], create: bool) -> None:
        if body["spec"].get("holderIdentity") in self.failing:
            raise OSError("connection timed out")
        if create and self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        current = (self.lease or {}).get("metadata", {}).get("resourceVersion")
        if not create and body["metadata"].get("resourceVersion") != current:
            raise ApiException(status=409, reason="Conflict")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    @property
    def holder(self) -> str | None:
        return (self.lease or {}).get("spec", {}).get("holderIdentity")


class Replica:
    def __init__(self, name: str, leases: FakeLeases, clock: VirtualTime) -> None:
        self.elector = LeaderElector(leases, "ns", "lease", name, TIMING, clock, clock.sleep)
        self.acting = False
        self.log: list[tuple[float, str]] = []
        self.clock = clock
        self.task = asyncio.create_task(self.elector.run(self.started, self.stopped))

    async def started(self) -> None:
        self.acting = True
        self.log.append((self.clock.now, "started"))

    async def stopped(self) -> None:
        self.acting = False
        self.log.append((self.clock.now, "stopped"))

    async def kill(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def world() -> tuple[VirtualTime, FakeLeases]:
    return VirtualTime(), FakeLeases()


async def leader_then_standby(clock: VirtualTime, leases: FakeLeases) -> tuple[Replica, Replica]:
    """`a` starts first (and leads), `b` a second later."""
    a = Replica("a", leases, clock)
    await clock.run_until(1)
    return a, Replica("b", leases, clock)


async def run_checking_one_actor(clock: VirtualTime, replicas: list[Replica], until: float) -> None:
    while clock.now < until:
        await clock.run_until(clock.now + 0.5)
        assert sum(r.acting for r in replicas) <= 1, [(r.elector.me, r.log) for r in replicas]


async def test_one_leader_and_the_standby_waits(world: tuple[VirtualTime, FakeLeases]) -> None:
    clock, leases = world
    a, b = Replica("a", leases, clock), Replica("b", leases, clock)
    await run_checking_one_actor(clock, [a, b], 120)
    assert a.acting != b.acting
    assert leases.lease is not None and leases.lease["spec"]["leaseTransitions"] == 0
    for r in (a, b):
        await r.kill()


async def test_the_standby_takes_over_within_a_lease_duration_of_the_leaders_death(
    world: tuple[VirtualTime, FakeLeases],
) -> None:
    clock, leases = world
    a, b = await leader_then_standby(clock, leases)
    await run_checking_one_actor(clock, [a, b], 30)
    assert a.acting and not b.acting
    died = clock.now
    await a.kill()  # kill -9: no release
    await run_checking_one_actor(clock, [b], died + 40)
    took_over = b.log[0][0] - died
    assert TIMING.duration - TIMING.retry_period <= took_over <= TIMING.duration + 2 * TIMING.retry_period
    assert leases.holder == "b" and leases.lease is not None and leases.lease["spec"]["leaseTransitions"] == 1
    await b.kill()


async def test_a_leader_that_cannot_renew_stops_before_anyone_can_take_its_lease(
    world: tuple[VirtualTime, FakeLeases],
) -> None:
    clock, leases = world
    a, b = await leader_then_standby(clock, leases)
    await run_checking_one_actor(clock, [a, b], 30)
    cut = clock.now
    leases.failing.add("a")  # partitioned from the API server, still running
    await run_checking_one_actor(clock, [a, b], cut + 60)
    stopped = next(t for t, what in a.log if what == "stopped")
    started_b = next(t for t, what in b.log if what == "started")
    assert stopped - cut <= TIMING.renew_deadline + TIMING.retry_period
    assert stopped < started_b
    for r in (a, b):
        await r.kill()


async def test_a_released_lease_is_taken_at_the_next_retry(world: tuple[VirtualTime, FakeLeases]) -> None:
    clock, leases = world
    a, b = await leader_then_standby(clock, leases)
    await run_checking_one_actor(clock, [a, b], 20)
    await a.kill()
    released = clock.now
    await a.elector.release()
    await run_checking_one_actor(clock, [b], released + 10)
    assert b.acting and b.log[0][0] - released <= TIMING.retry_period + 0.5
    await b.kill()


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseTiming(duration=10, renew_deadline=10, retry_period=2)


class CrashingLeases(FakeLeases):
    """Leases whose second write raises what no code path expects (a bug in a client library)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def write_lease(self, namespace: str, name: str, body: dict[str, Any], create: bool) -> None:
        self.writes += 1
        if self.writes == 2:
            raise KeyError("resourceVersion")
        await super().write_lease(namespace, name, body, create)

    async def list_leases(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.lease)] if self.lease else []


class ActingLog:
    """The manager's side of leadership: when this replica acted, and when it stopped."""

    def __init__(self) -> None:
        self.shard = Shard.parse("")
        self.standby_alive: Any = None
        self.log: list[str] = []

    async def start_acting(self) -> None:
        self.log.append("start")

    async def stop_acting(self) -> None:
        self.log.append("stop")

    async def set_older(self, older: Any) -> None:
        pass


async def test_an_elector_that_crashes_while_leading_stops_acting_before_it_is_restarted() -> None:
    """Acting on a Lease nobody renews is a split brain once it expires: whatever ends the
    elector, the replica stops acting first; the supervisor then starts the elector again."""
    config = OperatorConfig(
        leader_election=True,
        lease_duration_seconds=1.0,
        lease_renew_deadline_seconds=0.5,
        lease_retry_period_seconds=0.1,
        identity="a",
    )
    manager = ActingLog()
    leadership = Leadership(config, CrashingLeases(), manager)  # type: ignore[arg-type]
    await leadership.start()
    try:
        await async_wait_until(lambda: manager.log == ["start", "stop", "start"], within=10, what="a restart")
        assert leadership.elector is not None and leadership.elector.leading.is_set()
    finally:
        await leadership.stop()
    assert manager.log[-1] == "stop"
