"""All pools of this operator: one controller per WorkerPool, over the shared
connections (connections.py) and the pod index the eviction gate asks (pod_index.py).

Started from Kopf's startup handler as plain asyncio tasks, not Kopf daemons or
timers: those add a finalizer to every WorkerPool, and deleting a pool would
hang while the operator is down. Nothing needs clean-up on delete (pods are
garbage-collected through ownerReferences, Redis keys expire).

Every replica follows the pools and their pods (a warm standby); only the
replica that holds the leader Lease runs the pool loops (`acting`), and of
those only for the pools of its shard (every process still follows every
pool: any of them can answer an eviction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...contracts import names
from ...decide.shards import Shard
from ...decide.topology import yields
from ..adapters.kube import Kube
from ..admission.evictions import EvictionGate
from ..loop.controller import PoolController
from ..ports import PoolDeps
from ..process.clock import SYSTEM_CLOCK
from ..process.config import OperatorConfig
from .connections import Connections
from .pod_index import PodIndex

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Manager:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        self.pools: dict[Key, PoolController] = {}
        self.connections = Connections(config)
        self.last_progress = time.monotonic()
        self.acting = False  # pool loops run only while this replica leads
        self.shard = Shard.parse(config.shard)
        # Shards of other counts that act before ours (changing N): their pools wait.
        self.older: Mapping[int, frozenset[int]] = {}
        self.standby_alive: Callable[[], float] | None = None  # the elector's last attempt (monotonic)
        # Pod events that arrive before their pool's first event.
        self._orphans: dict[Key, dict[str, tuple[str | None, dict[str, Any]]]] = {}
        self.pool_deps = PoolDeps(
            kube=kube,
            hubs=self.connections,
            brokers=self.connections,
            worker_image=config.worker_image,
            status_min_interval=config.status_min_interval,
            status_volatile_refresh=config.status_volatile_refresh,
            progress=self._progress,
            marks=config.mark_policy,
            write_backlog=kube.write_backlog,
            template_policy=config.template_policy,
        )
        self.pod_index = PodIndex(self.pools)
        self.evictions = EvictionGate(self.pod_index, self.connections.commands_for, kube, SYSTEM_CLOCK)

    def _progress(self) -> None:
        self.last_progress = time.monotonic()

    async def start_acting(self) -> None:
        self.acting = True
        self.last_progress = time.monotonic()
        for key, pool in list(self.pools.items()):
            if self._owns(key):
                pool.resume()
        log.info("acting on %d pools (shard %d/%d)", len(self._acted_on()), self.shard.index, self.shard.count)

    async def stop_acting(self) -> None:
        self.acting = False
        for pool in list(self.pools.values()):
            await pool.pause()
        log.info("standing by")

    async def stop(self) -> None:
        self.acting = False
        for pool in list(self.pools.values()):
            await pool.stop()
        await self.connections.stop()
        await self.kube.close()

    # --- Kopf events ---------------------------------------------------------------------

    async def on_pool_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        pool = self.pools.get(key)
        if event_type == "DELETED":
            if pool is not None:
                del self.pools[key]
                await pool.stop()
                log.info("%s/%s deleted: stopped its controller (pods go by garbage collection)", *key)
            return
        if pool is not None and pool.body["metadata"].get("uid") != meta.get("uid"):
            await pool.stop()  # deleted and re-created under the same name
            pool = None
        if pool is None:
            pool = self.pools[key] = PoolController(self.pool_deps, body)
            for event, pod in self._orphans.pop(key, {}).values():
                pool.state.on_pod(event, pod)
            if self.acting and self._owns(key):
                pool.start()
        else:
            pool.on_body(body)

    def on_pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        owner = (meta.get("labels") or {}).get(names.POOL_LABEL)
        if owner is None:
            return
        key = (meta.get("namespace", ""), owner)
        self.pod_index.on_pod(event_type, key[0], meta.get("name", ""), owner)
        pool = self.pools.get(key)
        if pool is not None:
            pool.state.on_pod(event_type, body)
        elif event_type != "DELETED":
            self._orphans.setdefault(key, {})[meta.get("name", "")] = (event_type, body)
        else:
            self._orphans.get(key, {}).pop(meta.get("name", ""), None)

    async def set_older(self, older: Mapping[int, frozenset[int]]) -> None:
        """Another shard count's shards that still act: pause the pools they own, resume the rest."""
        if older == self.older:
            return
        self.older = older
        log.info("shards of other counts still acting: %s", {c: sorted(i) for c, i in older.items()} or "none")
        if not self.acting:
            return
        for key, pool in list(self.pools.items()):
            if self._owns(key):
                pool.resume()
            else:
                await pool.pause()

    def _owns(self, key: Key) -> bool:
        """This shard's pool, and no shard of an older topology still acts on it."""
        return self.shard.owns(*key) and not yields(*key, self.older)

    def _acted_on(self) -> list[Key]:
        return [key for key in self.pools if self._owns(key)]

    # --- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """For Kopf's liveness endpoint: raises when the pool loops have stopped moving."""
        now = time.monotonic()
        if not self.acting:
            tried = self.standby_alive() if self.standby_alive is not None else now
            if now - tried > 60:
                raise RuntimeError(f"leader election made no attempt for {now - tried:.0f} s")
        elif self._acted_on() and now - self.last_progress > 60:
            raise RuntimeError(f"no pool reconciled for {now - self.last_progress:.0f} s")
        return {
            "acting": self.acting,
            "pools": len(self.pools),
            **self.connections.health(),
        }
