"""What the operator observed about one pool, as plain values (gather -> decide -> act)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contracts import names
from ..contracts.report import WorkerReport
from ..contracts.wire import QueueStatus

TERMINAL_PHASES = ("Succeeded", "Failed")
# A pod whose eviction was held this recently is leaving (drains retry every few
# seconds and the webhook re-marks it; an abandoned drain's mark runs out).
EVICTION_MARK_SECONDS = 120.0


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    phase: str
    ready: bool
    terminating: bool
    created: float  # epoch seconds
    template_hash: str | None
    owners: tuple[str, ...] = ()  # the uids in its ownerReferences
    evicting_at: float | None = None  # epoch seconds its eviction was last held
    evicting_since: float | None = None  # epoch seconds its eviction was first held
    # The node-autoscaler annotations it carries (names.BUSY_MARKS keys only), as (key, value).
    marks: tuple[tuple[str, str], ...] = ()
    # It has the readiness gate names.REGISTERED_CONDITION, and that condition is not True yet.
    gate_open: bool = False

    @property
    def active(self) -> bool:
        return not self.terminating and self.phase not in TERMINAL_PHASES

    @classmethod
    def from_body(cls, body: Mapping[str, Any], created: float) -> PodView:
        meta, status, spec = body.get("metadata", {}), body.get("status") or {}, body.get("spec") or {}
        annotations = meta.get("annotations") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        gated = any(g.get("conditionType") == names.REGISTERED_CONDITION for g in spec.get("readinessGates") or [])
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            phase=status.get("phase") or "Pending",
            # Its containers, not the pod: the pod's Ready waits for the registration gate, which
            # the operator opens itself (a running, unregistered worker is not "never started").
            ready=conditions.get("ContainersReady", conditions.get("Ready")) == "True",
            terminating=meta.get("deletionTimestamp") is not None,
            created=created,
            template_hash=(meta.get("labels") or {}).get(names.TEMPLATE_HASH_LABEL),
            owners=tuple(str(o.get("uid", "")) for o in meta.get("ownerReferences") or []),
            evicting_at=_epoch(annotations.get(names.EVICTING_ANNOTATION)),
            evicting_since=_epoch(annotations.get(names.EVICTING_SINCE_ANNOTATION)),
            marks=tuple((k, annotations[k]) for k, _ in names.BUSY_MARKS if k in annotations),
            gate_open=gated and conditions.get(names.REGISTERED_CONDITION) != "True",
        )

    def leaving(self, now: float) -> bool:
        """Its eviction is being held: it finishes what it runs and goes."""
        return self.evicting_at is not None and now - self.evicting_at < EVICTION_MARK_SECONDS


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None  # someone else's value: not a mark of ours


@dataclass(frozen=True)
class WorkerView:
    """A live registration of one of this pool's workers."""

    info: WorkerReport
    fresh: bool  # a heartbeat arrived recently enough to trust `info`, and it carries counts


@dataclass(frozen=True)
class Observation:
    pods: tuple[PodView, ...]
    workers: Mapping[str, WorkerView] = field(default_factory=dict)
    queue: QueueStatus | None = None  # the demand source's reading; None when it could not be read
    redis_error: str | None = None  # why the workers' reports cannot be trusted now (None: they can)
    demand_error: str | None = None  # why the queue could not be read (None: `queue` is current)
    now: float = 0.0
    # Seconds until the first fresh worker's heartbeat is too old to trust (None: none is fresh).
    # Nothing else wakes the pool when a worker falls silent: no event marks an absence.
    stale_in: float | None = None
