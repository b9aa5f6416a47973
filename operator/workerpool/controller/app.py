"""The composition root: the operator's parts made and wired in one place, in order, and
stopped in the reverse order. `handlers.py` (the Kopf registry) only calls in here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from .adapters.kube import Kube
from .fleet.manager import Manager
from .ha.leadership import Leadership
from .process.config import OperatorConfig
from .process.gc_policy import PauseTimer, keep_collections_short
from .process.loop_lag import watch_loop_lag
from .process.ratelimit import TokenBucket, WriteLimiter


class Stoppable(Protocol):
    async def stop(self) -> None: ...


ServeWebhook = Callable[[Kube, OperatorConfig], Awaitable[Stoppable]]  # serves it (stopped with the app)


@dataclass
class App:
    config: OperatorConfig
    kube: Kube
    manager: Manager
    leadership: Leadership
    webhook: Stoppable | None = None  # the eviction webhook's keeper, when served
    background: list[asyncio.Task[None]] = field(default_factory=list)
    gc_pauses: PauseTimer = field(default_factory=PauseTimer)

    @classmethod
    async def start(cls, serve_webhook: ServeWebhook) -> App:
        """The API client behind the write limiter, the pool manager, the eviction webhook when a
        port is set (`serve_webhook`, which registers its Kopf handler), leadership, and the
        process's own loops (event-loop lag, the garbage collector's freezes)."""
        config = OperatorConfig.from_env()
        bucket = TokenBucket(config.api_writes_per_second, config.api_write_burst)
        limiter = WriteLimiter(bucket, time.monotonic, max_in_flight=config.api_writes_in_flight)
        kube = await Kube.connect(limiter)
        manager = Manager(config, kube)
        webhook = await serve_webhook(kube, config) if config.webhook_port else None
        app = cls(config, kube, manager, Leadership(config, kube, manager), webhook)
        await app.leadership.start()
        app.background.append(asyncio.create_task(watch_loop_lag(), name="loop-lag"))
        app.gc_pauses.install()
        if config.gc_freeze_seconds:
            app.background.append(asyncio.create_task(keep_collections_short(config.gc_freeze_seconds), name="gc"))
        return app

    async def stop(self) -> None:
        """Stop acting, give up the lease, stop the webhook, every pool controller and Redis hub."""
        for task in self.background:
            task.cancel()
        self.gc_pauses.remove()
        await self.leadership.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        await self.manager.stop()
