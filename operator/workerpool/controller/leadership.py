"""Who acts: the replica holding the leader Lease, or, without leader election
(one replica, local runs), this one from the start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from .config import OperatorConfig
from .kube import Kube
from .leader import LeaderElector, LeaseTiming
from .manager import Manager
from .ports import SYSTEM_CLOCK


class Leadership:
    def __init__(self, config: OperatorConfig, kube: Kube, manager: Manager) -> None:
        self.config, self.manager = config, manager
        self.elector: LeaderElector | None = None
        self.task: asyncio.Task[None] | None = None
        if config.leader_election:
            timing = LeaseTiming(
                config.lease_duration_seconds, config.lease_renew_deadline_seconds, config.lease_retry_period_seconds
            )
            namespace = config.lease_namespace or "default"
            identity = config.identity or f"{socket.gethostname()}-{os.getpid()}"
            lease = config.lease_name + manager.shard.suffix  # each shard elects its own leader
            self.elector = LeaderElector(kube, namespace, lease, identity, timing, SYSTEM_CLOCK)

    async def start(self) -> None:
        if self.elector is None:
            await self.manager.start_acting()
            return
        elector = self.elector
        self.manager.standby_alive = lambda: elector.last_attempt
        self.task = asyncio.create_task(
            elector.run(self.manager.start_acting, self.manager.stop_acting), name="leader-election"
        )

    async def stop(self) -> None:
        """Stop acting first, then release the lease: the next leader never overlaps with us."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.manager.stop_acting()
        if self.elector is not None:
            await self.elector.release()
