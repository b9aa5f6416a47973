"""Why a pool is Stalled, in the words of the policy that follows (`scaling.py`: while the
workers or the demand cannot be read, nothing is scaled down and evictions are held; at
least minWorkers are kept). The adapters and the loop say what failed; the wording of
what the operator then does is written once, here, next to the decisions it describes."""

from __future__ import annotations

from .reasons import Reason
from .status import Stall

WORKERS_UNKNOWN = "no scale-down, no eviction, at least minWorkers kept"
DEMAND_UNKNOWN = "demand unknown, no scale-down, at least minWorkers kept"


def workers_unknown(reason: Reason, why: str) -> Stall:
    """The workers' reports cannot be trusted (their Redis is unreachable, refused, failing over)."""
    return Stall(reason, f"{why}: {WORKERS_UNKNOWN}")


def demand_unknown(reason: Reason, why: str) -> Stall:
    """The pool's queue cannot be read (its broker or one of its queues)."""
    return Stall(reason, f"{why}: {DEMAND_UNKNOWN}")


def secret_missing(reason: Reason, name: str, key: str, namespace: str) -> Stall:
    return Stall(reason, f"Secret {name} with key {key} not found in namespace {namespace}")


def pod_names_shared(prefix: str, others: tuple[tuple[str, str], ...]) -> Stall:
    """Other pools' workers may report under this pool's pods' names (Bifrost's reports carry no pool)."""
    shown = ", ".join(f"{ns}/{name}" for ns, name in others[:5]) + (" and more" if len(others) > 5 else "")
    return Stall(
        Reason.POD_NAMES_SHARED,
        f"{shown} use the same Redis server and name their pods alike ({prefix}...): the worker's heartbeat"
        " carries only its pod's name, so whose worker sent one cannot be told; rename a pool, or give each"
        f" its own Redis server: {WORKERS_UNKNOWN}, no worker counted ready or idle",
    )
