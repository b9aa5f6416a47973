"""What the pool loop and the eviction gate need from the world, as small Protocols:
the API server, the Redis hubs, the demand sources (the queues), a clock, and,
for the gate, the pool a worker pod belongs to. The real ones are `Kube`, the
fleet's `Connections` and `PodIndex` (over `loop.eviction_view`) and
`SYSTEM_CLOCK`; unit tests drive a controller with in-memory fakes of these in
virtual time.

The types the adapters hand over (`Fault`, `Subscriber` and its `PoolListener`,
`BrokerAccess`, `PublishOnce`) are defined here, so the ports sit below the
adapters: the adapters implement these, the loop uses them, and neither layer
reaches into the other's modules for a type.

May import: `process/`, and everything below the controller (`decide`,
`contracts`, `protocols`, `redis_connect`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kubernetes_asyncio.client.exceptions import ApiException

from ..contracts.report import WorkerReport
from ..contracts.wire import QueueStatus
from ..decide.disruption import MarkPolicy
from ..decide.events import Event
from ..decide.observation import PodView
from ..decide.status import Stall
from ..decide.template_policy import TemplatePolicy
from ..protocols import WorkerProtocol
from ..redis_connect import Problem, RedisAccess
from .process.clock import SYSTEM_CLOCK, Clock

# --- what the adapters hand over ------------------------------------------------------


class PoolListener(Protocol):
    """What a hub tells a pool (a pool controller's PoolState). Called on the event loop; never blocks."""

    def on_heartbeat(self, report: WorkerReport) -> None: ...
    def on_offline(self, worker_id: str) -> None: ...  # the worker said it stopped
    def on_queue(self, status: QueueStatus) -> None: ...  # the pool's queue depth moved
    def on_resync(self, present: set[str], regs: dict[str, WorkerReport]) -> None: ...  # ids, re-read reports
    def on_health(self) -> None: ...  # the hub's error changed
    def owns(self, worker_id: str) -> bool: ...  # is this worker id one of the pool's pods?


@dataclass
class Subscriber:
    """A pool listening to a hub."""

    namespace: str
    name: str
    queue_key: str | None  # the seed's queue sorted set; None: the pool's demand is read elsewhere
    trust_seconds: float  # a heartbeat heard this recently is not re-read from the hash by a resync
    listener: PoolListener


@dataclass(frozen=True)
class Fault:
    """Why a loop cannot read Redis: the kind (the condition's reason) and a message without secrets."""

    problem: Problem
    message: str


@dataclass(frozen=True)
class BrokerAccess:
    """How to reach one broker: its AMQP URL and, optionally, its management API (both may carry
    passwords: never shown)."""

    url: str = field(repr=False)
    management: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PublishOnce:
    """What came of a recycle's publish: `published` now (its record), `handled_before` (the
    stored record of the run that did), or `not_listening` (nothing written nor sent: no
    subscriber on these channels yet)."""

    outcome: Literal["published", "handled_before", "not_listening"]
    record: str
    not_listening: tuple[str, ...] = ()


# --- the API server's answers, in the loop's words ------------------------------------

ApiError = ApiException  # what the Kubernetes client raises for a refused request
# `ApiError` is what the Kubernetes client raises for a refused request; the loop reads it
# only through these, so what an HTTP status means is said once, here.


def refused_by_admission(exc: ApiError) -> bool:
    """Admission said no (Pod Security, a quota, a policy) or the object is invalid: retrying
    the same request cannot succeed until something changes."""
    return exc.status in (400, 403, 422)


def client_error(exc: ApiError) -> bool:
    """The server refused the request (4xx): nothing was done. A 5xx may have done it after all."""
    return 400 <= (exc.status or 0) < 500


def retry_after(exc: ApiError) -> str | None:
    """The server's Retry-After (a throttled request), None when the call never got a response."""
    headers = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    return str(value) if value is not None else None


def api_message(exc: ApiError) -> str:
    """The server's own message (its Status body), at most 500 characters."""
    try:
        return str(json.loads(exc.body or b"{}").get("message", exc.reason))[:500]
    except (TypeError, ValueError):
        return str(exc.reason)


# --- the ports ------------------------------------------------------------------------


class KubeApi(Protocol):
    async def list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]: ...
    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...
    async def patch_status(
        self, namespace: str, name: str, status: Callable[[], dict[str, Any] | None], urgent: bool = False
    ) -> bool:
        """`urgent`: it records a side effect just made (a recycle published): ahead of other status writes."""
        ...

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None: ...
    async def event(self, pool: dict[str, str], type_: str, reason: str, message: str) -> None: ...
    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None: ...
    async def mark_pod(
        self, namespace: str, name: str, patch: dict[str, str | None], still: Callable[[], bool] | None = None
    ) -> dict[str, Any] | None: ...
    async def set_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> dict[str, Any] | None:
        """Set a WorkerPool's finalizers if it is still at `resource_version`: the patched object, or
        None when it changed meanwhile or is gone (the next round, on the newer object, tries again)."""
        ...

    async def set_pod_condition(self, namespace: str, name: str, condition: dict[str, str]) -> dict[str, Any] | None:
        """Set one condition of a pod's status; None when the pod is gone."""
        ...


class Commands(Protocol):
    @property
    def has_handshake(self) -> bool: ...
    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool: ...
    async def unretire(self, worker_id: str, queue_key: str) -> None: ...
    async def retire_for_eviction(self, worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]: ...
    async def report(self, worker_id: str) -> WorkerReport | None: ...
    async def publish_once(
        self, dedupe_key: str, record: str, messages: list[tuple[str, str]], ttl_seconds: int
    ) -> PublishOnce: ...


class Hub(Protocol):
    @property
    def fault(self) -> Fault | None: ...
    @property
    def worker_fault(self) -> Fault | None: ...
    @property
    def commands(self) -> Commands: ...
    def subscribe(self, sub: Subscriber) -> None: ...
    def queue(self, key: str) -> QueueStatus | None: ...
    def queue_fault(self, key: str) -> str | None: ...
    def names_shared_with(self, namespace: str, name: str) -> tuple[tuple[str, str], ...]:
        """Other pools whose workers may report under this pool's pods' names (none: reports are its own)."""
        ...


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
    def broker_for(self, access: BrokerAccess) -> Broker: ...
    def release_broker(self, access: BrokerAccess, namespace: str, name: str) -> None: ...


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
    write_backlog: Callable[[], int] = lambda: 0  # writes queued in the write limiter now
    template_policy: TemplatePolicy = field(default_factory=TemplatePolicy)  # what pod templates may ask for


@dataclass(frozen=True)
class RedisTarget:
    """Where to ask about a pool's workers: also known on a replica that is not acting."""

    access: RedisAccess
    queue_key: str
    protocol: WorkerProtocol
    window: float  # the fresh window of the pool's heartbeats


class EvictedPool(Protocol):
    """The pool of a worker pod being evicted, as the eviction gate sees it."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    def pod(self, name: str) -> PodView | None: ...
    def last_report(self, name: str) -> WorkerReport | None:
        """The pod's worker's last heartbeat (None: none heard, as on a standby replica)."""
        ...

    def redis_fault(self) -> Fault | None:
        """Why the hub's reports cannot be trusted now (a failover, an outage, the resync after it)."""
        ...

    async def redis_target(self) -> RedisTarget | None: ...
    async def emit(self, event: Event) -> None: ...
    def hold_limit(self) -> float:
        """How long an eviction is held at most from its first hold: the longest a running
        execution may still take (executionTimeoutSeconds + gracefulShutdownSeconds)."""
        ...

    def drains_on_sigterm(self) -> bool:
        """The pool's worker finishes what it holds on SIGTERM (then an eviction retires it)."""
        ...


class PodOwners(Protocol):
    def pool_of(self, namespace: str, pod: str) -> EvictedPool | None:
        """The pool of one of our worker pods; None for any other pod."""
        ...
