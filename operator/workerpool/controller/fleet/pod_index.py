"""Which pool a worker pod belongs to, from the pod watch (`ports.PodOwners`): an
Eviction names only the pod, and the gate must answer from memory in time."""

from __future__ import annotations

from collections.abc import Mapping

from ..loop.controller import PoolController
from ..loop.eviction_view import PoolForEviction

Key = tuple[str, str]  # (namespace, name)


class PodIndex:
    def __init__(self, pools: Mapping[Key, PoolController]) -> None:
        self.pools = pools
        self._pod_pools: dict[Key, Key] = {}  # (namespace, pod name) -> its pool's key

    def on_pod(self, event_type: str | None, namespace: str, pod: str, pool: str) -> None:
        if event_type == "DELETED":
            self._pod_pools.pop((namespace, pod), None)
        else:
            self._pod_pools[(namespace, pod)] = (namespace, pool)

    def pool_of(self, namespace: str, pod: str) -> PoolForEviction | None:
        """By the pod's pool label, then its owner uid (a pod that merely copies the label is not ours)."""
        key = self._pod_pools.get((namespace, pod))
        ctl = self.pools.get(key) if key is not None else None
        return PoolForEviction(ctl) if ctl is not None and ctl.state.owns(pod) else None
