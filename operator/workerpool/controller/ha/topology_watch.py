"""Reading the other shard counts' Leases while this shard leads (decide/topology.py says what
follows from them). Liveness is judged as the elector judges its own lease: by this process's
clock, from when a Lease's record was last seen to change, never by comparing clocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ...decide.shards import Shard
from ...decide.topology import ShardLease, older_owners, shard_lease
from ..process.clock import Clock


class LeaseLister(Protocol):
    async def list_leases(self, namespace: str) -> list[dict[str, Any]]: ...


class TopologyWatch:
    def __init__(
        self, api: LeaseLister, namespace: str, base: str, shard: Shard, duration: float, clock: Clock
    ) -> None:
        self.api, self.namespace, self.base, self.shard = api, namespace, base, shard
        self.duration, self.clock = duration, clock
        self.seen: dict[str, tuple[str, float]] = {}  # lease name -> (resourceVersion, first seen at)

    async def older(self, acquired: str) -> Mapping[int, frozenset[int]]:
        """The shards of other counts that act before us (see `older_owners`)."""
        now = self.clock.monotonic()
        leases, seen = [], {}
        for lease in await self.api.list_leases(self.namespace):
            meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
            parsed = shard_lease(self.base, meta.get("name", ""))
            if parsed is None:
                continue
            version = str(meta.get("resourceVersion", ""))
            before = self.seen.get(meta["name"])
            seen[meta["name"]] = first = before if before is not None and before[0] == version else (version, now)
            live = bool(spec.get("holderIdentity")) and now - first[1] < self.duration
            leases.append(ShardLease(parsed[0], parsed[1], str(spec.get("acquireTime") or ""), live))
        self.seen = seen
        return older_owners(self.shard.count, acquired, leases)
