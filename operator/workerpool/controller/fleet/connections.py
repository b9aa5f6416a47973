"""The connections the pools of this replica share: one Redis hub per URL and
worker protocol, one RabbitMQ broker connection per AMQP URL, and command-only
Redis clients for a replica that is not acting. Each is opened by its first
pool and closed with its last (`ports.HubRegistry`, `ports.BrokerRegistry`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ...protocols import protocol_for
from ...redis_connect import RedisAccess
from ..adapters.hub_routing import SharedPodNames
from ..adapters.rabbitmq import RabbitBroker
from ..adapters.redis_hub import RedisHub, operator_client
from ..adapters.worker_commands import WorkerCommands
from ..ports import BrokerAccess
from ..process.config import OperatorConfig


class Connections:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.hubs: dict[tuple[RedisAccess, str], RedisHub] = {}  # (Redis, protocol) -> its hub
        self.brokers: dict[BrokerAccess, RabbitBroker] = {}
        # Command-only Redis clients for a replica that is not acting (no hub, no subscriptions).
        self._command_clients: dict[tuple[RedisAccess, str], WorkerCommands] = {}
        self._closing: set[asyncio.Task[None]] = set()  # hubs and brokers being stopped (kept referenced)
        self.pod_names = SharedPodNames()  # across hubs: pub/sub is server-wide, hubs are per URL

    def hub_for(self, access: RedisAccess, protocol: str) -> RedisHub:
        hub = self.hubs.get((access, protocol))
        if hub is None:
            config = self.config
            hub = RedisHub(
                access,
                protocol_for(protocol),
                config.resync_seconds,
                config.queue_poll_seconds,
                config.redis_identity,
                max_message_bytes=config.max_message_bytes,
                pod_names=self.pod_names,
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

    def broker_for(self, access: BrokerAccess) -> RabbitBroker:
        broker = self.brokers.get(access)
        if broker is None:
            broker = self.brokers[access] = RabbitBroker(access.url, self.config.queue_poll_seconds, access.management)
            broker.start()
        return broker

    def release_broker(self, access: BrokerAccess, namespace: str, name: str) -> None:
        broker = self.brokers.get(access)
        if broker is None:
            return
        broker.unsubscribe(namespace, name)
        if not broker.listening:
            del self.brokers[access]
            self._close_later(broker.stop())

    def _close_later(self, stopping: Coroutine[Any, Any, None]) -> None:
        self._closing.add(asyncio.get_running_loop().create_task(stopping))
        for task in list(self._closing):
            if task.done():
                self._closing.discard(task)

    async def stop(self) -> None:
        for hub in list(self.hubs.values()):
            await hub.stop()
        for broker in list(self.brokers.values()):
            await broker.stop()
        for commands in self._command_clients.values():
            await commands.client.aclose()

    def health(self) -> dict[str, int]:
        return {
            "redis_hubs": len(self.hubs),
            "redis_down": sum(1 for h in self.hubs.values() if h.fault),
            "rabbitmq_brokers": len(self.brokers),
            "rabbitmq_down": sum(1 for b in self.brokers.values() if b.error),
        }
