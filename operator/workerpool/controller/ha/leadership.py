"""Who acts: the replica holding the leader Lease, or, without leader election
(one replica, local runs), this one from the start. While it leads a shard it
also watches the Leases of other shard counts, so that a change of N never
has two shards act on one pool (decide/topology.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from ..adapters.kube import ApiException, Kube
from ..fleet.manager import Manager
from ..process.clock import SYSTEM_CLOCK
from ..process.config import OperatorConfig
from ..process.tasks import supervise
from .leader import LeaderElector, LeaseTiming
from .topology_watch import TopologyWatch

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, config: OperatorConfig, kube: Kube, manager: Manager) -> None:
        self.config, self.manager = config, manager
        self.elector: LeaderElector | None = None
        self.topology: TopologyWatch | None = None
        self.task: asyncio.Task[None] | None = None
        if config.leader_election:
            timing = LeaseTiming(
                config.lease_duration_seconds, config.lease_renew_deadline_seconds, config.lease_retry_period_seconds
            )
            namespace = config.lease_namespace or "default"
            identity = config.identity or f"{socket.gethostname()}-{os.getpid()}"
            lease = config.lease_name + manager.shard.suffix  # each shard elects its own leader
            self.elector = LeaderElector(kube, namespace, lease, identity, timing, SYSTEM_CLOCK)
            self.topology = TopologyWatch(
                kube, namespace, config.lease_name, manager.shard, timing.duration, SYSTEM_CLOCK
            )

    async def start(self) -> None:
        if self.elector is None:
            await self.manager.start_acting()
            return
        elector = self.elector
        self.manager.standby_alive = lambda: elector.last_attempt
        self.task = supervise("leader-election", "leader", self._elect)

    async def _elect(self) -> None:
        """The elector's loop; whatever ends it unexpectedly, this replica stops acting before the
        supervisor starts it again: acting on a Lease nobody renews would be a split brain."""
        assert self.elector is not None
        try:
            await self.elector.run(self._started, self.manager.stop_acting, self._refresh_topology)
        except Exception:
            self.elector.step_down()
            await self.manager.stop_acting()
            raise

    async def _started(self) -> None:
        await self._refresh_topology()  # before the first round: an older shard may still own some pools
        await self.manager.start_acting()

    async def _refresh_topology(self) -> None:
        if self.topology is None or self.elector is None:
            return
        try:
            older = await self.topology.older(self.elector.acquired)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("shard Leases not read (the last reading stands): %s", exc)
            return
        await self.manager.set_older(older)

    async def stop(self) -> None:
        """Stop acting first, then release the lease: the next leader never overlaps with us."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.manager.stop_acting()
        if self.elector is not None:
            await self.elector.release()
