"""What a pool controller needs from the world, as small Protocols: the API
server, the Redis hubs, the demand sources (the queues), a clock. The real ones
are `Kube`, the `Manager`'s hub and broker registries and `SYSTEM_CLOCK`; unit
tests drive a controller with in-memory fakes of these in virtual time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..contracts.report import WorkerReport
from ..contracts.wire import QueueStatus
from ..decide.disruption import MarkPolicy
from ..decide.status import Stall
from ..redis_connect import RedisAccess
from .adapters.redis_hub import Fault, PoolListener, Subscriber


class KubeApi(Protocol):
    async def list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]: ...
    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...
    async def patch_status(self, namespace: str, name: str, status: Callable[[], dict[str, Any] | None]) -> bool: ...
    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None: ...
    async def event(self, pool: dict[str, str], type_: str, reason: str, message: str) -> None: ...
    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None: ...
    async def mark_pod(self, namespace: str, name: str, patch: dict[str, str | None]) -> dict[str, Any] | None: ...


class Commands(Protocol):
    @property
    def has_handshake(self) -> bool: ...
    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool: ...
    async def unretire(self, worker_id: str, queue_key: str) -> None: ...
    async def retire_for_eviction(self, worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]: ...
    async def report(self, worker_id: str) -> WorkerReport | None: ...
    async def publish_once(
        self, dedupe_key: str, record: str, messages: list[tuple[str, str]], ttl_seconds: int
    ) -> tuple[bool, str]: ...


class Hub(Protocol):
    @property
    def fault(self) -> Fault | None: ...
    @property
    def worker_fault(self) -> Fault | None: ...
    @property
    def queue_error(self) -> str | None: ...
    @property
    def commands(self) -> Commands: ...
    def subscribe(self, sub: Subscriber) -> None: ...
    def queue(self, key: str) -> QueueStatus | None: ...


class HubRegistry(Protocol):
    def hub_for(self, access: RedisAccess, protocol: str) -> Hub: ...
    def release_hub(self, access: RedisAccess, protocol: str, namespace: str, name: str) -> None: ...


class Broker(Protocol):
    """A demand source other than Redis (a RabbitMQ broker): ready messages of named queues."""

    def subscribe(self, namespace: str, name: str, queues: tuple[str, ...], listener: PoolListener) -> None: ...
    def reading(self, queues: tuple[str, ...]) -> tuple[QueueStatus | None, Stall | None]:
        """(the queues' summed reading, None until all are read; the stall, when one cannot be read)."""
        ...


class BrokerRegistry(Protocol):
    def broker_for(self, url: str) -> Broker: ...
    def release_broker(self, url: str, namespace: str, name: str) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True)
class PoolDeps:
    """Everything a PoolController uses, passed in (no service locator)."""

    kube: KubeApi
    hubs: HubRegistry
    brokers: BrokerRegistry
    worker_image: str
    status_min_interval: float
    status_volatile_refresh: float
    clock: Clock = SYSTEM_CLOCK
    marks: MarkPolicy = field(default_factory=MarkPolicy)
    progress: Callable[[], None] = lambda: None  # called after every reconcile (the liveness check)
