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
