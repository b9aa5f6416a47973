"""What every worker protocol provides (a typing Protocol), and the shapes it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..contracts.report import WorkerReport
from ..contracts.resource import SecretKeyRef, WorkerPoolSpec

# The worker container of a template: the one named "worker", else the first.
DEFAULT_CONTAINER_NAME = "worker"


@dataclass(frozen=True)
class PoolRef:
    """What a pod needs to know about its WorkerPool."""

    name: str
    namespace: str
    uid: str


# --- what a message on the heartbeat channel turned out to be ---------------------------


@dataclass(frozen=True)
class Heartbeat:
    report: WorkerReport


@dataclass(frozen=True)
class Offline:
    """The worker said it stopped: it is no worker from now on."""

    worker_id: str


@dataclass(frozen=True)
class Ignored:
    """A message of a type the operator does not use (Bifrost's pool_scaling, ...)."""

    type: str


Heard = Heartbeat | Offline | Ignored


@dataclass(frozen=True)
class RetireHandshake:
    """The keys of a protocol whose worker checks a retiring mark before each claim and
    keeps the set of executions it holds: with them the operator can stop a worker
    claiming and learn, atomically, that it holds nothing (DESIGN §5)."""

    retiring_key: str
    held_key: str


class WorkerProtocol(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def heartbeat_channel(self) -> str: ...
    @property
    def registration_match(self) -> str:
        """A SCAN pattern that finds every worker's keys."""
        ...

    def worker_id_from_key(self, key: str) -> str | None: ...
    def parse_message(self, raw: bytes | str) -> Heard:
        """A message on the heartbeat channel; raises WireFormatError when malformed."""
        ...

    def worker_reads(self, worker_id: str) -> Sequence[tuple[str, str]]:
        """The Redis reads that fetch one worker's report: (command, key), command `hgetall` or `get`."""
        ...

    def parse_reads(self, worker_id: str, replies: Sequence[Any]) -> WorkerReport | None:
        """The report from the replies to `worker_reads` (None: no such worker); raises WireFormatError."""
        ...

    @property
    def has_retire_handshake(self) -> bool: ...
    @property
    def reports_name_their_pool(self) -> bool:
        """Whether a worker's report says which pool it is in (else its pod name alone tells)."""
        ...

    @property
    def follows_sentinel(self) -> bool:
        """Whether its worker takes a Sentinel URL and follows a failover (else one Redis URL only)."""
        ...

    def handshake(self, worker_id: str, queue_key: str) -> RetireHandshake | None:
        """The retire handshake's keys; None for a worker without one."""
        ...

    def recycle_message(self, worker_id: str, pid: int | None, reason: str) -> tuple[str, str]:
        """(channel, JSON message) that asks a worker to recycle."""
        ...

    @property
    def recycle_kills_running(self) -> bool:
        """Whether the worker's recycle kills running executions (then a busy target is rejected)."""
        ...

    def fresh_window(self, heartbeat_interval: float) -> float:
        """Seconds a worker's last heartbeat is trusted."""
        ...

    def pod_env(self, pool: PoolRef, spec: WorkerPoolSpec) -> list[dict[str, Any]]:
        """The env the worker reads, injected into the worker container."""
        ...

    def default_container(self, image: str) -> dict[str, Any] | None:
        """The container of a template that has none (None: the template must give one)."""
        ...

    def termination_grace_seconds(self, spec: WorkerPoolSpec) -> int:
        """The pod's terminationGracePeriodSeconds unless the template sets one."""
        ...

    def drains_on_sigterm(self, spec: WorkerPoolSpec) -> bool:
        """Whether the pool's worker finishes what it runs when its pod is deleted (else it kills it)."""
        ...


def env_value(name: str, value: str | None, ref: SecretKeyRef | None) -> dict[str, Any]:
    """An env var from a Secret key when a ref is given (the URL never enters the pod spec), else plain."""
    if ref is not None:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": name, "value": value or ""}


def fresh_window(heartbeat_interval: float) -> float:
    """One lost heartbeat is tolerated, two are not."""
    return 2 * heartbeat_interval + 2
