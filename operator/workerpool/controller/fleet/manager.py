"""All pools of this operator: one controller per WorkerPool, one Redis hub per URL
and worker protocol, one RabbitMQ broker connection per AMQP URL.

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

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ...contracts import names
from ...decide.shards import Shard
from ...decide.topology import yields
from ...protocols import protocol_for
from ...redis_connect import RedisAccess
from ..adapters.kube import Kube
from ..adapters.rabbitmq import RabbitBroker
from ..adapters.redis_hub import RedisHub, operator_client
from ..adapters.worker_commands import WorkerCommands
from ..admission.evictions import EvictionGate
from ..loop.controller import PoolController
from ..ports import SYSTEM_CLOCK, PoolDeps
from ..process.config import OperatorConfig

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Manager:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        self.pools: dict[Key, PoolController] = {}
        self.hubs: dict[tuple[RedisAccess, str], RedisHub] = {}  # (Redis, protocol) -> its hub
        self.brokers: dict[str, RabbitBroker] = {}
        self.last_progress = time.monotonic()
        self.acting = False  # pool loops run only while this replica leads
        self.shard = Shard.parse(config.shard)
        # Shards of other counts that act before ours (changing N): their pools wait.
        self.older: Mapping[int, frozenset[int]] = {}
        self.standby_alive: Callable[[], float] | None = None  # the elector's last attempt (monotonic)
        self._closing: set[asyncio.Task[None]] = set()  # hubs being stopped (kept referenced)
        # Pod events that arrive before their pool's first event.
        self._orphans: dict[Key, dict[str, tuple[str | None, dict[str, Any]]]] = {}
        self.pool_deps = PoolDeps(
            kube=kube,
            hubs=self,
            brokers=self,
            worker_image=config.worker_image,
            status_min_interval=config.status_min_interval,
            status_volatile_refresh=config.status_volatile_refresh,
            progress=self._progress,
            marks=config.mark_policy,
        )
        # (namespace, pod name) -> its pool's key: an eviction names only the pod.
        self.pod_pools: dict[tuple[str, str], Key] = {}
        self.evictions = EvictionGate(self.pools, self.pod_pools, self.commands_for, kube, SYSTEM_CLOCK)
        # Command-only Redis clients for a replica that is not acting (no hub, no subscriptions).
        self._command_clients: dict[tuple[RedisAccess, str], WorkerCommands] = {}

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
        for hub in list(self.hubs.values()):
            await hub.stop()
        for broker in list(self.brokers.values()):
            await broker.stop()
        for commands in self._command_clients.values():
            await commands.client.aclose()
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
        if event_type == "DELETED":
            self.pod_pools.pop((key[0], meta.get("name", "")), None)
        else:
            self.pod_pools[(key[0], meta.get("name", ""))] = key
        pool = self.pools.get(key)
        if pool is not None:
            pool.state.on_pod(event_type, body)
        elif event_type != "DELETED":
            self._orphans.setdefault(key, {})[meta.get("name", "")] = (event_type, body)
        else:
            self._orphans.get(key, {}).pop(meta.get("name", ""), None)

    # --- Redis hubs ---------------------------------------------------------------------------

    def hub_for(self, access: RedisAccess, protocol: str) -> RedisHub:
        hub = self.hubs.get((access, protocol))
        if hub is None:
            config = self.config
            hub = RedisHub(
                access, protocol_for(protocol), config.resync_seconds, config.queue_poll_seconds, config.redis_identity
            )
            self.hubs[(access, protocol)] = hub
            hub.start()
        return hub

    def commands_for(self, access: RedisAccess, protocol: str) -> WorkerCommands:
        """Commands to the workers of a Redis: through its hub when there is one."""
        hub = self.hubs.get((access, protocol))
        if hub is not None:
            return hub.commands
        commands = self._command_clients.get((access, protocol))
        if commands is None:
            client = operator_client(access, self.config.redis_identity)
            commands = WorkerCommands(client, protocol_for(protocol), durable=access.has_replicas)
            self._command_clients[(access, protocol)] = commands
        return commands

    def release_hub(self, access: RedisAccess, protocol: str, namespace: str, name: str) -> None:
        hub = self.hubs.get((access, protocol))
        if hub is None:
            return
        hub.unsubscribe(namespace, name)
        if not hub.subscribers:
            del self.hubs[(access, protocol)]
            self._close_later(hub.stop())

    def broker_for(self, url: str) -> RabbitBroker:
        broker = self.brokers.get(url)
        if broker is None:
            broker = self.brokers[url] = RabbitBroker(url, self.config.queue_poll_seconds)
            broker.start()
        return broker

    def release_broker(self, url: str, namespace: str, name: str) -> None:
        broker = self.brokers.get(url)
        if broker is None:
            return
        broker.unsubscribe(namespace, name)
        if not broker.listening:
            del self.brokers[url]
            self._close_later(broker.stop())

    def _close_later(self, stopping: Coroutine[Any, Any, None]) -> None:
        self._closing.add(asyncio.get_running_loop().create_task(stopping))
        for task in list(self._closing):
            if task.done():
                self._closing.discard(task)

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
            "redis_hubs": len(self.hubs),
            "redis_down": sum(1 for h in self.hubs.values() if h.fault),
            "rabbitmq_brokers": len(self.brokers),
            "rabbitmq_down": sum(1 for b in self.brokers.values() if b.error),
        }
