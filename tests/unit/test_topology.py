"""Changing the shard count: the newer topology waits for the older one, pool by pool."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workerpool.decide.shards import shard_of
from workerpool.decide.topology import ShardLease, older_owners, shard_lease, yields

T1, T2, T3 = "2026-11-26T10:00:00.000000Z", "2026-11-26T10:05:00.000000Z", "2026-11-26T10:09:00.000000Z"


def test_shard_lease_names() -> None:
    assert shard_lease("wpo", "wpo") == (0, 1)
    assert shard_lease("wpo", "wpo-shard-2-of-3") == (2, 3)
    assert shard_lease("wpo", "wpo-shard-3-of-3") is None
    assert shard_lease("wpo", "other-shard-0-of-2") is None
    assert shard_lease("wpo", "wpo-shard-x-of-2") is None


def test_the_newer_topology_waits_for_the_older_owner_only() -> None:
    leases = [ShardLease(0, 3, T1, True), ShardLease(1, 3, T1, False), ShardLease(0, 2, T2, True)]
    older = older_owners(2, T2, leases)
    assert older == {3: frozenset({0})}  # shard 1 of 3 is no longer live; our own count is ignored
    assert older_owners(3, T1, [ShardLease(0, 2, T2, True)]) == {}  # the older one never waits for the newer


def test_an_old_shard_restarted_later_waits_for_the_new_ones() -> None:
    assert older_owners(3, T3, [ShardLease(0, 2, T2, True)]) == {2: frozenset({0})}


@given(pool=st.from_regex(r"p[0-9]{1,4}", fullmatch=True), old=st.integers(1, 6), new=st.integers(1, 6))
def test_a_pool_has_at_most_one_actor_across_two_topologies(pool: str, old: int, new: int) -> None:
    """Every shard of both counts holds a live Lease; the old ones were first."""
    if old == new:
        return
    leases = [ShardLease(i, old, T1, True) for i in range(old)] + [ShardLease(i, new, T2, True) for i in range(new)]
    acting = [
        count
        for count, acquired in ((old, T1), (new, T2))
        if not yields("ns", pool, older_owners(count, acquired, leases))
    ]
    assert acting == [old]  # the pool's owner under each count: only the older one acts
    # The old owner's Lease goes (its pod stopped): the new owner acts, and only it.
    gone = [lease for lease in leases if not (lease.count == old and lease.index == shard_of("ns", pool, old))]
    assert not yields("ns", pool, older_owners(new, T2, gone))
