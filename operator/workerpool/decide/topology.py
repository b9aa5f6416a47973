"""Changing the number of shards without two actors on one pool.

While shards of an old count (say 3) still run, the shards of a new count
(say 2) start. A pool's new owner must not act while its old owner still
does. Every shard's leader reads the shard Leases of the other counts. A
pool is left alone while the shard that owns it under another count still
holds a live Lease acquired *before* ours. The older topology keeps acting
until its pods stop (a rolling update deletes them, and a clean shutdown
releases the Lease), then the newer one takes over, pool by pool. The rule is
asymmetric (the earlier acquisition wins), so the two never wait for each
other; an old shard that restarts later defers to the new ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .shards import shard_of


@dataclass(frozen=True)
class ShardLease:
    index: int
    count: int
    acquired: str  # the Lease's acquireTime (RFC 3339, UTC: compares as text)
    live: bool  # held, and renewed within its duration by the reader's own clock


def shard_lease(base: str, name: str) -> tuple[int, int] | None:
    """(index, count) of a shard Lease of `base`; the plain name is the only shard of one."""
    if name == base:
        return 0, 1
    match = re.fullmatch(re.escape(base) + r"-shard-(\d+)-of-(\d+)", name)
    if match is None:
        return None
    index, count = int(match.group(1)), int(match.group(2))
    return (index, count) if 0 <= index < count else None


def older_owners(count: int, acquired: str, leases: Iterable[ShardLease]) -> Mapping[int, frozenset[int]]:
    """Per other shard count, the shards that act before us: live and acquired before our Lease."""
    out: dict[int, set[int]] = {}
    for lease in leases:
        if lease.count != count and lease.live and lease.acquired < acquired:
            out.setdefault(lease.count, set()).add(lease.index)
    return {c: frozenset(i) for c, i in out.items()}


def yields(namespace: str, name: str, older: Mapping[int, frozenset[int]]) -> bool:
    """Must this pool wait (its owner under an older topology still acts)?"""
    return any(shard_of(namespace, name, count) in indexes for count, indexes in older.items())
