"""Applying a recycle decision: publish its commands with the dedupe record in
one Redis script, so each annotation value is published exactly once, also
across operator restarts; tell the outcome in Events and metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from ...contracts.resource import LastRecycle
from ...contracts.wire import WireFormatError
from ...decide.events import Event, EventReason
from ...decide.recycle import RecycleDecision
from ...protocols import WorkerProtocol
from ..ports import Commands
from ..process import metrics

RECYCLE_DEDUPE_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class RecycleWaits:
    """Nothing published nor recorded: these target workers are not subscribed to their
    commands channel (between subscriptions, e.g. right after a Redis failover)."""

    workers: tuple[str, ...]


Emit = Callable[[Event], Awaitable[None]]


async def apply_recycle(
    decision: RecycleDecision,
    events: Sequence[Event],
    commands: Commands,
    protocol: WorkerProtocol,
    emit: Emit,
    pool: tuple[str, str],
) -> LastRecycle | RecycleWaits:
    """The record of the request: the decision's, or a previous run's when that run handled it
    first; or RecycleWaits when a target worker is not listening for commands yet (a later
    round tries again)."""
    if decision.publish is not None:
        sends = [(c.worker_id, protocol.recycle_message(c.worker_id, c.pid, decision.value)) for c in decision.publish]
        sent = await commands.publish_once(
            decision.dedupe_key, decision.record.model_dump_json(), [m for _, m in sends], RECYCLE_DEDUPE_TTL
        )
        if sent.outcome == "not_listening":
            metrics.RECYCLES_DEFERRED.labels(*pool).inc()
            deaf = set(sent.not_listening)
            return RecycleWaits(tuple(sorted({worker for worker, (channel, _) in sends if channel in deaf})))
        if sent.outcome == "handled_before":
            # Handled (and told) before, by a previous run of the operator: keep that record.
            with contextlib.suppress(ValidationError, WireFormatError):
                return LastRecycle.model_validate_json(sent.record)
            return decision.record
    for result in decision.record.results:
        metrics.RECYCLES.labels(*pool, result.status).inc()
    for event in events:
        await emit(event)
    return decision.record


class Recycler:
    """Applies each round's recycle decision, and remembers one held back (a target not
    subscribed yet) so that the status keeps the last record meanwhile and the Event that
    says why is posted once."""

    def __init__(self, emit: Emit, pool: tuple[str, str]) -> None:
        self.emit, self.pool = emit, pool
        self.waiting: str | None = None  # the annotation value held back

    async def apply(
        self, decision: RecycleDecision, events: Sequence[Event], commands: Commands, protocol: WorkerProtocol
    ) -> LastRecycle | None:
        """The record to keep, or None when the request is held back (a later round retries it)."""
        record = await apply_recycle(decision, events, commands, protocol, self.emit, self.pool)
        if not isinstance(record, RecycleWaits):
            self.waiting = None
            return record
        if self.waiting != decision.value:
            workers = ", ".join(record.workers) or "a target worker"
            await self.emit(
                Event(
                    "Warning",
                    EventReason.RECYCLE_WAITING,
                    f"recycle {decision.value!r} waits: {workers} not subscribed to its commands channel "
                    f"(reconnecting to Redis?); nothing is sent until every target listens, then once",
                )
            )
        self.waiting = decision.value
        return None
