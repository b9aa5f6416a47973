"""Shards on the real API server: 3 shards, 30 pools, every pool acted on by exactly
one process; a shard's leader killed, its standby takes its pools, still one actor each."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.harness import (
    FAST_LEASE,
    READY,
    OperatorProcess,
    Pools,
    lease_holder,
    pool_manifest,
    start_replica,
    wait_until,
)
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from workerpool.decide.shards import shard_of

pytestmark = pytest.mark.cluster

POOLS, SHARDS, LEASE = 30, 3, "wpo-shards"


def start(stack: DevStack, namespace: str, tmp_path: Path, shard: int, identity: str) -> OperatorProcess:
    return start_count(stack, namespace, tmp_path, shard, SHARDS, identity)


def reconciled(op: OperatorProcess, namespace: str, pool: str) -> float:
    return op.metric("workerpool_reconcile_duration_seconds_count", namespace=namespace, pool=pool)


def test_every_pool_has_one_actor_also_after_a_shard_leader_dies(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    pools = Pools(stack, namespace)
    names = [f"p{i}" for i in range(POOLS)]
    ops = {f"s{i}": start(stack, namespace, tmp_path, i, f"s{i}") for i in range(SHARDS)}
    lease0 = f"{LEASE}-shard-0-of-{SHARDS}"
    try:
        wait_until(lambda: lease_holder(stack, namespace, lease0) == "s0", timeout=READY, what="s0 to lead shard 0")
        ops["s0-standby"] = start(stack, namespace, tmp_path, 0, "s0-standby")
        for name in names:  # no workers: only the pools' own rounds (status) are under test
            pools.apply(pool_manifest(name, redis_server.url, minWorkers=0))

        def actors(pool: str) -> list[str]:
            return [who for who, op in ops.items() if reconciled(op, namespace, pool) > 0]

        expected = {n: f"s{shard_of(namespace, n, SHARDS)}" for n in names}
        assert set(expected.values()) == {f"s{i}" for i in range(SHARDS)}  # every shard has pools here
        wait_until(lambda: all(actors(n) == [expected[n]] for n in names), timeout=READY, what="one actor per pool")

        ops.pop("s0").kill()
        wait_until(
            lambda: lease_holder(stack, namespace, lease0) == "s0-standby",
            timeout=3 * FAST_LEASE["duration"],
            what="shard 0's standby to take its lease",
        )
        moved = [n for n in names if expected[n] == "s0"]
        for name in moved:  # an edit each: the new leader must act on them
            pools.apply(pool_manifest(name, redis_server.url, minWorkers=0, maxWorkers=4))
        wait_until(
            lambda: all(pools.status(n).get("observedGeneration") == 2 for n in moved),
            timeout=READY,
            what="shard 0's pools acted on by its new leader",
        )
        standby = {**expected, **{n: "s0-standby" for n in moved}}
        assert all(actors(n) == [standby[n]] for n in names), {n: actors(n) for n in names}
    finally:
        for op in ops.values():
            op.stop()


def test_changing_the_shard_count_never_has_two_actors_on_a_pool(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """3 -> 2 as a rolling update does it: the new shards start while the old ones run, then the old
    ones stop one by one. A new shard acts on a pool only once its old owner is gone."""
    pools = Pools(stack, namespace)
    names = [f"p{i}" for i in range(POOLS)]
    old = {i: start_count(stack, namespace, tmp_path, i, 3, f"old{i}") for i in range(3)}
    new: dict[int, OperatorProcess] = {}
    try:
        for i in range(3):
            wait_until(lambda i=i: lease_holder(stack, namespace, f"{LEASE}-shard-{i}-of-3") == f"old{i}",
                       timeout=READY, what=f"old{i} to lead")  # fmt: skip
        for name in names:
            pools.apply(pool_manifest(name, redis_server.url, minWorkers=0))
        owner3 = {n: shard_of(namespace, n, 3) for n in names}
        owner2 = {n: shard_of(namespace, n, 2) for n in names}
        wait_until(lambda: all(reconciled(old[owner3[n]], namespace, n) > 0 for n in names),
                   timeout=READY, what="the old shards acting")  # fmt: skip

        new = {i: start_count(stack, namespace, tmp_path, i, 2, f"new{i}") for i in range(2)}
        for i in range(2):
            wait_until(lambda i=i: lease_holder(stack, namespace, f"{LEASE}-shard-{i}-of-2") == f"new{i}",
                       timeout=READY, what=f"new{i} to lead")  # fmt: skip
        touch(pools, names, redis_server, 2)  # every pool gets a round from whoever acts on it
        wait_until(lambda: all(pools.status(n).get("observedGeneration") == 2 for n in names),
                   timeout=READY, what="the old shards acting on the edit")  # fmt: skip
        assert all(reconciled(op, namespace, n) == 0 for op in new.values() for n in names)

        for i, generation in ((0, 3), (1, 4), (2, 5)):  # the rolling update stops the old shards one by one
            old.pop(i).stop()  # SIGTERM: it releases its Lease
            touch(pools, names, redis_server, generation)
            moved = [n for n in names if owner3[n] == i or owner3[n] not in old]
            waiting = [n for n in names if owner3[n] in old]
            wait_until(
                lambda moved=moved, g=generation: all(pools.status(n).get("observedGeneration") == g for n in moved),
                timeout=READY,
                what=f"the new shards acting on old{i}'s pools",
            )
            assert all(reconciled(new[owner2[n]], namespace, n) > 0 for n in moved)
            # The pools whose old owner still runs: not touched by the new shards.
            assert all(reconciled(op, namespace, n) == 0 for op in new.values() for n in waiting), i
        # In the end each pool has one actor: its owner under the new count.
        assert all([k for k, op in new.items() if reconciled(op, namespace, n) > 0] == [owner2[n]] for n in names)
    finally:
        for op in [*old.values(), *new.values()]:
            op.stop()


def start_count(
    stack: DevStack, namespace: str, tmp_path: Path, shard: int, count: int, identity: str
) -> OperatorProcess:
    return start_replica(stack, namespace, tmp_path / identity, identity, LEASE, WORKERPOOL_SHARD=f"{shard}/{count}")


def touch(pools: Pools, names: list[str], redis_server: RedisServer, generation: int) -> None:
    """A spec edit per pool (a maxWorkers only `generation` has): a round for each, from its actor."""
    for name in names:
        pools.apply(pool_manifest(name, redis_server.url, minWorkers=0, maxWorkers=10 + generation))
