"""A pool controller as the eviction gate sees it (`ports.EvictedPool`): the pod,
its worker's last heartbeat, whether the hub can be trusted, where its Redis is,
and its Events. The gate never reaches into the controller itself."""

from __future__ import annotations

from pydantic import ValidationError

from ...contracts.report import WorkerReport
from ...decide.events import Event
from ...decide.observation import PodView
from ...protocols import protocol_for
from ..ports import Fault, RedisTarget
from .controller import PoolController
from .sources import workers_untrusted


class PoolForEviction:
    def __init__(self, ctl: PoolController) -> None:
        self._ctl = ctl

    @property
    def namespace(self) -> str:
        return self._ctl.namespace

    @property
    def name(self) -> str:
        return self._ctl.name

    def pod(self, name: str) -> PodView | None:
        return self._ctl.state.pods.get(name)

    def last_report(self, name: str) -> WorkerReport | None:
        tracked = self._ctl.state.workers.get(name)
        return tracked.info if tracked is not None else None

    def redis_fault(self) -> Fault | None:
        """Why the pool's workers' reports cannot be trusted now (None: they can)."""
        return workers_untrusted(self._ctl.sources.hub, self._ctl.sources.names_shared)

    async def redis_target(self) -> RedisTarget | None:
        """The pool's Redis, queue key and protocol, also on a replica that is not acting (None: unknown)."""
        ctl = self._ctl
        try:
            pool = ctl.parsed.of(ctl.body)
        except ValidationError:
            return None
        protocol = protocol_for(pool.spec.protocol)
        window = protocol.fresh_window(pool.spec.heartbeat_interval_seconds)
        if ctl.sources.hub_access is not None:
            return RedisTarget(ctl.sources.hub_access, ctl.sources.queue_key, protocol, window)
        access, _ = await ctl.sources.access(pool)
        if access is None:
            return None  # unknown: the eviction is held (Redis cannot be asked)
        return RedisTarget(access, pool.spec.redis.queue_key, protocol, window)

    async def emit(self, event: Event) -> None:
        await self._ctl.events.emit(event)

    def hold_limit(self) -> float:
        try:
            spec = self._ctl.parsed.of(self._ctl.body).spec
        except ValidationError:
            return float("inf")  # a pool that cannot be read holds as long as Redis says so
        return float(spec.execution_timeout_seconds + spec.graceful_shutdown_seconds)

    def drains_on_sigterm(self) -> bool:
        try:
            return self._ctl.parsed.of(self._ctl.body).spec.drains_on_sigterm
        except ValidationError:
            return False  # unknown: judged as a worker that kills
