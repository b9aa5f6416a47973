"""Where a pool's round reads its workers (the Redis hub of its URL and protocol)
and its demand (that hub's queue sorted set, or a RabbitMQ broker): the URLs
resolved (inline or from Secrets), the subscriptions kept, and the reading."""

from __future__ import annotations

from dataclasses import dataclass

from ...contracts.redis_url import RedisUrlError, parse_redis_url
from ...contracts.resource import WorkerPool
from ...contracts.wire import QueueStatus
from ...decide.pods import pod_name_prefix
from ...decide.reasons import Reason
from ...decide.stalls import pod_names_shared, workers_unknown
from ...decide.status import Stall
from ...protocols import WorkerProtocol, protocol_for
from ...redis_connect import Problem, RedisAccess
from ..ports import Broker, BrokerAccess, Fault, Hub, PoolDeps, PoolListener, Subscriber
from .api_io import UrlSource

# The Stalled reason of each kind of hub fault.
FAULT_REASONS = {
    Problem.UNAVAILABLE: Reason.REDIS_UNAVAILABLE,
    Problem.FAILOVER: Reason.REDIS_FAILOVER,
    Problem.TLS: Reason.REDIS_TLS_FAILED,
    Problem.AUTH: Reason.REDIS_AUTH_FAILED,
    Problem.PERMISSION: Reason.REDIS_PERMISSION_DENIED,
    Problem.INTERNAL: Reason.LOOP_RESTARTING,
    Problem.NAMES_SHARED: Reason.POD_NAMES_SHARED,
}


@dataclass(frozen=True)
class Sources:
    """Where one round reads the pool's workers (the Redis hub) and its demand (the hub, or a broker)."""

    protocol: WorkerProtocol
    hub: Hub | None
    stall: Stall | None  # why the workers cannot be read (Redis URL, Secret, the hub failing)
    broker: Broker | None = None
    broker_stall: Stall | None = None  # why the broker cannot be asked (its URL's Secret)
    names_shared: Stall | None = None  # other pools' workers may report under this pool's pods' names


class SourceResolver:
    """One pool's subscriptions to a Redis hub and a broker, following its spec."""

    def __init__(self, deps: PoolDeps, namespace: str, name: str, listener: PoolListener) -> None:
        self.deps, self.namespace, self.name, self.listener = deps, namespace, name, listener
        self.hub_access: RedisAccess | None = None
        self.hub: Hub | None = None  # the hub subscribed to (its faults hold evictions too)
        self.protocol_name = "seed"  # the protocol of the hub subscribed to
        self.queue_key = ""  # the pool's queue, as last subscribed
        self.broker_url: BrokerAccess | None = None
        self.names_shared: Stall | None = None  # as the last round found (the eviction gate reads it)
        self.redis_url = UrlSource(deps.kube, namespace, deps.clock)
        self.redis_ca = UrlSource(deps.kube, namespace, deps.clock, Reason.REDIS_CA_SECRET_NOT_FOUND)
        self.rabbitmq_url = UrlSource(deps.kube, namespace, deps.clock, Reason.RABBITMQ_SECRET_NOT_FOUND)
        self.management_url = UrlSource(deps.kube, namespace, deps.clock, Reason.RABBITMQ_SECRET_NOT_FOUND)

    def release(self) -> None:
        if self.hub_access is not None:
            self.deps.hubs.release_hub(self.hub_access, self.protocol_name, self.namespace, self.name)
        if self.broker_url is not None:
            self.deps.brokers.release_broker(self.broker_url, self.namespace, self.name)

    async def access(self, pool: WorkerPool) -> tuple[RedisAccess | None, Stall | None]:
        """How to reach the pool's Redis (its URL, inline or from a Secret, and its CA bundle), or why not."""
        redis = pool.spec.redis
        url, stall = await self.redis_url.get(redis.url, redis.url_secret_ref)
        if url is None:
            return None, stall
        if (refused := url_stall(url, pool)) is not None:
            return None, refused
        ca_pem = None
        if redis.ca_secret_ref is not None:
            ca_pem, stall = await self.redis_ca.get(None, redis.ca_secret_ref)
            if ca_pem is None:
                return None, stall
        return RedisAccess(url, ca_pem), None

    async def resolve(self, pool: WorkerPool) -> Sources:
        """The pool's Redis hub and demand source (subscribed to), and why either is stalled."""
        protocol = protocol_for(pool.spec.protocol)
        access, stall = await self.access(pool)
        hub = None
        if access is not None:
            self._subscribe(access, pool, protocol)
            hub = self.hub = self.deps.hubs.hub_for(access, protocol.name)
            if (fault := hub.worker_fault or hub.fault) is not None:
                stall = workers_unknown(FAULT_REASONS[fault.problem], fault.message)
        shared = hub.names_shared_with(self.namespace, self.name) if hub is not None else ()
        self.names_shared = pod_names_shared(pod_name_prefix(pool.name), shared) if shared else None
        stall = stall or self.names_shared
        rabbitmq = pool.spec.rabbitmq
        if rabbitmq is None:
            if self.broker_url is not None:  # the spec no longer names a broker
                self.deps.brokers.release_broker(self.broker_url, self.namespace, self.name)
                self.broker_url = None
            return Sources(protocol, hub, stall, names_shared=self.names_shared)
        broker_url, broker_stall = await self.rabbitmq_url.get(rabbitmq.url, rabbitmq.url_secret_ref)
        management: str | None = None
        if rabbitmq.management_url is not None or rabbitmq.management_url_secret_ref is not None:
            management, management_stall = await self.management_url.get(
                rabbitmq.management_url, rabbitmq.management_url_secret_ref
            )
            broker_stall = broker_stall or management_stall
        broker = None
        if broker_url is not None and broker_stall is None:
            broker = self._subscribe_broker(BrokerAccess(broker_url, management), tuple(rabbitmq.queues))
        return Sources(protocol, hub, stall, broker, broker_stall, self.names_shared)

    def _subscribe(self, access: RedisAccess, pool: WorkerPool, protocol: WorkerProtocol) -> None:
        if self.hub_access != access or self.protocol_name != protocol.name:
            if self.hub_access is not None:
                self.deps.hubs.release_hub(self.hub_access, self.protocol_name, self.namespace, self.name)
            self.hub_access, self.protocol_name = access, protocol.name
        trust = protocol.fresh_window(pool.spec.heartbeat_interval_seconds)
        self.queue_key = pool.spec.redis.queue_key
        # The seed's demand is the queue sorted set, read by the hub; another protocol's is not in Redis.
        queue_key = self.queue_key if pool.spec.rabbitmq is None else None
        sub = Subscriber(self.namespace, self.name, queue_key, trust, self.listener)
        self.deps.hubs.hub_for(access, protocol.name).subscribe(sub)

    def _subscribe_broker(self, url: BrokerAccess, queues: tuple[str, ...]) -> Broker:
        if self.broker_url != url:
            if self.broker_url is not None:
                self.deps.brokers.release_broker(self.broker_url, self.namespace, self.name)
            self.broker_url = url
        broker = self.deps.brokers.broker_for(url)
        broker.subscribe(self.namespace, self.name, queues, self.listener)
        return broker


def demand(pool: WorkerPool, sources: Sources) -> tuple[QueueStatus | None, str | None, Stall | None]:
    """The queue reading, why there is none, and the stall it causes (no I/O)."""
    rabbitmq = pool.spec.rabbitmq
    if rabbitmq is not None:
        if sources.broker is None:
            stall = sources.broker_stall
            return None, stall.message if stall else "no RabbitMQ URL", stall
        queue, stall = sources.broker.reading(tuple(rabbitmq.queues))
        waiting = None if queue is not None else "waiting for the first reading of the RabbitMQ queues"
        return queue, stall.message if stall else waiting, stall
    hub = sources.hub
    if hub is None:
        return None, sources.stall.message if sources.stall else "no Redis URL", None
    key = pool.spec.redis.queue_key
    queue = hub.queue(key)
    return queue, hub.queue_fault(key) or (None if queue is not None else "waiting for the first queue reading"), None


def url_stall(url: str, pool: WorkerPool) -> Stall | None:
    """Why this pool cannot use this Redis URL (None: it can). Never repeats the URL or its password."""
    ref = pool.spec.redis.url_secret_ref
    where = f"the Redis URL in Secret {ref.name} key {ref.key}" if ref is not None else "spec.redis.url"
    try:
        target = parse_redis_url(url)
    except RedisUrlError as exc:
        return Stall(Reason.REDIS_URL_INVALID, f"{where} cannot be used: {exc}")
    if target.sentinel and not protocol_for(pool.spec.protocol).follows_sentinel:
        return Stall(
            Reason.REDIS_URL_REFUSED,
            f"{where} is a Sentinel URL: the {pool.spec.protocol} worker takes one Redis URL and cannot follow a"
            " failover; give it a redis:// or rediss:// URL",
        )
    if pool.spec.redis.ca_secret_ref is not None and not target.tls:
        return Stall(
            Reason.REDIS_URL_REFUSED,
            f"spec.redis.tls.caSecretRef is set but {where} is not a TLS URL: use rediss:// or"
            " rediss+sentinel:// (the operator never falls back to plaintext)",
        )
    return None


def redis_error(sources: Sources) -> str | None:
    """Why the pool's workers cannot be read from Redis now (None: they can)."""
    if sources.hub is None:
        return sources.stall.message if sources.stall else "no Redis URL"
    fault = workers_untrusted(sources.hub, sources.names_shared)
    return fault.message if fault else None


def workers_untrusted(hub: Hub | None, names_shared: Stall | None) -> Fault | None:
    """Why the pool's workers' reports cannot be trusted now (None: they can): its hub's fault, or
    other pools' workers reporting under its pods' names. One rule for the rounds and the eviction gate."""
    fault = hub.worker_fault if hub is not None else None
    if fault is None and names_shared is not None:
        return Fault(Problem.NAMES_SHARED, names_shared.message)
    return fault
