"""The Events the operator posts on a WorkerPool (what `kubectl describe` shows): one
vocabulary of reasons, next to the conditions' (`reasons.py`), so users and alerts can
match on them and a new one is added in one place (and in docs/operator.md).

A Stalled condition's reason (`reasons.Reason`) is also posted as a Warning Event
(`plan.py`); every other Event's reason is an `EventReason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from .reasons import Reason


class EventReason(StrEnum):
    SCALING_UP = "ScalingUp"
    SCALING_DOWN = "ScalingDown"
    REPLACING_OUTDATED_PODS = "ReplacingOutdatedPods"
    REPLACING_FAILED_POD = "ReplacingFailedPod"
    POD_CREATE_REJECTED = "PodCreateRejected"
    RECYCLE_REQUESTED = "RecycleRequested"
    RECYCLE_REJECTED = "RecycleRejected"
    RECYCLE_WAITING = "RecycleWaiting"
    EVICTION_HELD = "EvictionHeld"
    EVICTION_ALLOWED = "EvictionAllowed"
    EVICTION_HOLD_EXPIRED = "EvictionHoldExpired"
    RETIRING_WORKERS = "RetiringWorkers"
    RETIRE_BOUND_PASSED = "RetireBoundPassed"
    PASSWORD_IN_URL = "PasswordInURL"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: EventReason | Reason  # a Reason only for a Stalled condition's Warning
    message: str
