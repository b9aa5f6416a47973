"""Leader election on a `coordination.k8s.io/v1` Lease: only the holder acts.

The same protocol as client-go's leaderelection (which kube-controller-manager
and kube-scheduler use). `kubernetes_asyncio` ships an elector with a LeaseLock
(`kubernetes_asyncio.leaderelection`); it is not used because it judges expiry
by the wall clock (`time.time()`), never releases the lease on shutdown (a
standby then waits out the whole lease duration), and takes no injectable
clock, so its timing cannot be tested in virtual time. Kopf's peering is not
leader election. This elector:

- expiry is judged by the *local* clock from when a holder's record was last
  seen to change, never by comparing the remote renewTime with our clock;
- writes are optimistic (resourceVersion): of two candidates one gets a 409;
- the leader renews every `retry_period`; when it has not renewed for
  `renew_deadline` (< the lease duration) it stops acting *before* anyone
  could take the lease;
- on a clean shutdown the leader releases the lease, so the standby takes
  over at its next retry instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..adapters.kube import ApiException
from ..process import metrics
from ..process.clock import Clock

log = logging.getLogger(__name__)


class LeaseApi(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def write_lease(self, namespace: str, name: str, body: dict[str, Any], create: bool) -> None: ...


@dataclass(frozen=True)
class LeaseTiming:
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")


def _micro_time(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observed:
    """The last Lease record seen, and when (local monotonic time) it was first seen."""

    version: str | None = None
    holder: str | None = None
    seen_at: float = 0.0


def holder_of(lease: dict[str, Any] | None) -> str | None:
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


def may_take(lease: dict[str, Any] | None, me: str, observed: Observed, now: float, duration: float) -> bool:
    """Free, ours, or unchanged for a whole lease duration by our own clock (its holder is gone)."""
    holder = holder_of(lease)
    return lease is None or holder in (None, me) or now - observed.seen_at >= duration


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api, self.namespace, self.name, self.me = api, namespace, name, identity
        self.timing, self.clock, self.sleep = timing, clock, sleep
        self.observed = Observed()
        self.leading = asyncio.Event()
        self._last: dict[str, Any] | None = None  # the Lease as last read
        self.acquired = ""  # our Lease's acquireTime, while we hold it
        self.last_attempt = clock.monotonic()  # liveness: the loop keeps trying

    async def run(
        self,
        started: Callable[[], Awaitable[None]],
        stopped: Callable[[], Awaitable[None]],
        renewed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Acquire, act (`started`), renew (then `renewed`); on a lost lease `stopped` and start over. Forever."""
        while True:
            await self._acquire()
            self._set_leading(True)
            await started()
            await self._renew_until_lost(renewed)
            self._set_leading(False)
            await stopped()

    def step_down(self) -> None:
        """No longer leading, whatever the lease says (the elector itself failed)."""
        self._set_leading(False)

    async def release(self) -> None:
        """On shutdown, after acting stopped: give the lease up so the standby need not wait it out."""
        if not self.leading.is_set():
            return
        self._set_leading(False)
        try:
            lease = await self.api.read_lease(self.namespace, self.name)
            if lease is not None and holder_of(lease) == self.me:
                lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=None, acquireTime=None)
                await self.api.write_lease(self.namespace, self.name, lease, create=False)
        except ApiException as exc:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, exc.reason)

    # --- the protocol ---------------------------------------------------------------------

    async def _acquire(self) -> None:
        while not await self._try_write():
            await self.sleep(self.timing.retry_period)

    async def _renew_until_lost(self, on_renewed: Callable[[], Awaitable[None]] | None) -> None:
        renewed = self.clock.monotonic()
        while True:
            await self.sleep(self.timing.retry_period)
            if await self._try_write():
                renewed = self.clock.monotonic()
                if on_renewed is not None:
                    await on_renewed()
            elif holder_of(self._last) not in (None, self.me):
                log.warning("lease %s/%s taken by %s: stopping", self.namespace, self.name, holder_of(self._last))
                return
            if self.clock.monotonic() - renewed >= self.timing.renew_deadline:
                log.warning("lease %s/%s not renewed for %.0f s: stopping", self.namespace, self.name,
                            self.timing.renew_deadline)  # fmt: skip
                return

    async def _try_write(self) -> bool:
        """Take or renew the lease; False when someone else holds it or the write failed."""
        self.last_attempt = now = self.clock.monotonic()
        self._last = None
        try:
            lease = self._last = await self.api.read_lease(self.namespace, self.name)
            self._observe(lease, now)
            if not may_take(lease, self.me, self.observed, now, self.timing.duration):
                return False
            body = self._claim(lease)
            await self.api.write_lease(self.namespace, self.name, body, create=lease is None)
            self.acquired = str(body["spec"].get("acquireTime") or "")
        except ApiException as exc:
            if exc.status != 409:  # a 409 is a lost race, not an error
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, exc.status, exc.reason)
            return False
        except (OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        return True

    def _observe(self, lease: dict[str, Any] | None, now: float) -> None:
        version = (lease or {}).get("metadata", {}).get("resourceVersion")
        if version != self.observed.version:
            self.observed = Observed(version, holder_of(lease), now)

    def _claim(self, lease: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(self.clock.time())
        body = lease or {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}}
        spec = body.setdefault("spec", {})
        if spec.get("holderIdentity") != self.me:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease is not None else 0)
            spec["acquireTime"] = now
        spec.update(holderIdentity=self.me, leaseDurationSeconds=int(self.timing.duration), renewTime=now)
        return body

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self.leading.set()
            log.info("lease %s/%s acquired by %s: acting", self.namespace, self.name, self.me)
        else:
            self.leading.clear()
        metrics.LEADER.set(1 if leading else 0)
