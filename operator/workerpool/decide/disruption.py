"""Which worker pods to mark for node autoscalers, and which to unmark.

A node autoscaler (Karpenter, cluster-autoscaler) empties the nodes it
consolidates by evicting their pods. Our eviction webhook holds the eviction
of a busy worker, so without a mark the autoscaler picks a node full of busy
workers and then retries against the webhook while the node cannot go. With
`karpenter.sh/do-not-disrupt: "true"` and
`cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` on a busy worker's
pod, both skip its node and pick one whose workers are idle.

The rules (pure: pods and heartbeats in, annotation changes out):

- A worker whose fresh heartbeat shows an execution is marked at once: the
  mark is the protection, so it is never delayed.
- A worker idle by fresh heartbeats is unmarked only once it has been idle for
  the hold-down, without a busy heartbeat in between: work that comes and goes
  every second writes the annotation once, not every second.
- A worker whose state is unknown (no fresh heartbeat, Redis faulted) keeps
  what it has; unknown is never idle, and it restarts the hold-down.
- An annotation the pool's pod template sets is the template's: never written.
- With the marks switched off, the marks already set are removed.
- When the operator's API writes are behind (a backlog in its write limiter),
  the hold-down stretches with the backlog (`under_backlog`): an unmark is the
  one write that can wait without harm (the pod stays protected a while
  longer), and a worker busy again before it goes costs no write at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..contracts import names
from .observation import PodView, WorkerView

DEFAULT_HOLD_DOWN_SECONDS = 60.0
MARK_VALUES = dict(names.BUSY_MARKS)  # key -> its value while the pod is marked


@dataclass(frozen=True)
class MarkPolicy:
    enabled: bool = True
    hold_down_seconds: float = DEFAULT_HOLD_DOWN_SECONDS


BACKLOG_PER_STEP = 100  # queued writes that add one more hold-down
MAX_STRETCH = 10  # the hold-down grows to at most this many times its setting


def under_backlog(policy: MarkPolicy, backlog: int) -> MarkPolicy:
    """The policy with its hold-down stretched by the operator's write backlog: one more
    hold-down per BACKLOG_PER_STEP queued writes, at most MAX_STRETCH times the setting."""
    stretch = min(MAX_STRETCH, 1 + max(0, backlog) // BACKLOG_PER_STEP)
    return policy if stretch == 1 else replace(policy, hold_down_seconds=policy.hold_down_seconds * stretch)


@dataclass(frozen=True)
class MarkChange:
    pod: str
    mark: bool  # True: set the marks; False: remove them
    keys: tuple[str, ...]  # the annotations this change writes (those the template leaves to us)

    @property
    def patch(self) -> dict[str, str | None]:
        """The pod's metadata.annotations merge patch (None removes a key)."""
        return {k: MARK_VALUES[k] if self.mark else None for k in self.keys}


@dataclass(frozen=True)
class MarkMemory:
    """Pod uid -> epoch seconds since which its worker's fresh heartbeats show it idle."""

    idle_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MarkPlan:
    changes: tuple[MarkChange, ...]
    memory: MarkMemory
    recheck_after: float | None  # seconds until a hold-down ends (None: none running)


def managed_keys(template_annotations: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(k for k, _ in names.BUSY_MARKS if k not in template_annotations)


def decide_marks(
    pods: Iterable[PodView],
    workers: Mapping[str, WorkerView],
    now: float,
    memory: MarkMemory,
    policy: MarkPolicy,
    keys: tuple[str, ...],
) -> MarkPlan:
    """`keys`: the annotations the operator manages for this pool (`managed_keys`)."""
    changes: list[MarkChange] = []
    idle_since: dict[str, float] = {}
    due: list[float] = []
    if not keys:
        return MarkPlan((), MarkMemory(), None)
    for pod in pods:
        if not pod.active:
            continue
        if not policy.enabled:
            if _any_mark(pod, keys):
                changes.append(MarkChange(pod.name, False, keys))
            continue
        worker = workers.get(pod.name)
        if worker is None or not worker.fresh:
            continue  # unknown: keep what it has, and the hold-down starts again
        if not worker.info.runs_nothing:
            if not _fully_marked(pod, keys):
                changes.append(MarkChange(pod.name, True, keys))
            continue
        since = memory.idle_since.get(pod.uid, now)
        if not _any_mark(pod, keys):
            continue  # idle and unmarked: nothing to time
        idle_since[pod.uid] = since  # kept until the pod is seen unmarked (a failed write is retried)
        if now - since >= policy.hold_down_seconds:
            changes.append(MarkChange(pod.name, False, keys))
        else:
            due.append(since + policy.hold_down_seconds - now)
    return MarkPlan(tuple(changes), MarkMemory(idle_since), min(due) if due else None)


def _fully_marked(pod: PodView, keys: tuple[str, ...]) -> bool:
    present = dict(pod.marks)
    return all(present.get(k) == MARK_VALUES[k] for k in keys)


def _any_mark(pod: PodView, keys: tuple[str, ...]) -> bool:
    return any(k in keys for k, _ in pod.marks)
