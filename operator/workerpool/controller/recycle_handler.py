"""The recycle annotation of one pool: each distinct value handled once, its
commands published exactly once (also across operator restarts), the outcome
kept for `status.lastRecycle` and told in Events."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from ..contracts import names
from ..contracts.resource import LastRecycle, RecycleResult, WorkerPool
from ..contracts.wire import WireFormatError
from ..decide import recycle as recycle_rules
from ..decide.observation import Observation
from ..decide.scaling import Event
from . import metrics
from .ports import Commands

RECYCLE_DEDUPE_TTL = 7 * 24 * 3600

Emit = Callable[[Event], Awaitable[None]]


class RecycleHandler:
    def __init__(self, namespace: str, name: str, status: dict[str, object]) -> None:
        self.namespace, self.name = namespace, name
        self.handled_request: str | None = None
        self.last_recycle: LastRecycle | None = None
        if status.get("lastRecycle"):
            with contextlib.suppress(ValidationError):
                self.last_recycle = LastRecycle.model_validate(status["lastRecycle"])
                self.handled_request = self.last_recycle.request

    async def handle(
        self, pool: WorkerPool, obs: Observation, commands: Commands, emit: Emit, now: dt.datetime
    ) -> None:
        value = pool.annotations.get(names.RECYCLE_ANNOTATION)
        if value is None or value == self.handled_request:
            return
        try:
            request = recycle_rules.parse_request(value)
        except recycle_rules.RecycleRequestError as exc:
            await self._reject(value, f"malformed request: {exc}", now, emit)
            return
        live = {wid: w.info for wid, w in obs.workers.items() if any(p.name == wid and p.active for p in obs.pods)}
        to_publish, results = recycle_rules.resolve(request, live)
        record = LastRecycle(request=value, handled_at=now, results=results)
        digest = hashlib.sha256(value.encode()).hexdigest()[:24]
        published, stored = await commands.publish_once(
            f"bifrost:operator:recycle:{pool.uid}:{digest}",
            record.model_dump_json(),
            [(c.worker_id, c.pid) for c in to_publish],
            RECYCLE_DEDUPE_TTL,
        )
        if not published:
            # Handled before (by a previous run of the operator): keep that record.
            with contextlib.suppress(ValidationError, WireFormatError):
                record = LastRecycle.model_validate_json(stored)
        self.last_recycle, self.handled_request = record, value
        if published:
            await self._tell(value, record, emit)

    async def _reject(self, value: str, reason: str, now: dt.datetime, emit: Emit) -> None:
        self.last_recycle = LastRecycle(
            request=value,
            handled_at=now,
            results=[RecycleResult(worker_id="", pid=None, status="rejected", reason=reason)],
        )
        self.handled_request = value
        metrics.RECYCLES.labels(self.namespace, self.name, "rejected").inc()
        await emit(Event("Warning", "RecycleRejected", f"{names.RECYCLE_ANNOTATION}={value!r}: {reason}"))

    async def _tell(self, value: str, record: LastRecycle, emit: Emit) -> None:
        for r in record.results:
            metrics.RECYCLES.labels(self.namespace, self.name, r.status).inc()
        requested = [
            f"{r.worker_id}" + (f":{r.pid}" if r.pid else "") for r in record.results if r.status == "recycle_requested"
        ]
        if requested:
            await emit(
                Event("Normal", "RecycleRequested", f"recycle published for {', '.join(requested)} (request {value!r})")
            )
        for r in record.results:
            if r.status == "rejected":
                target = r.worker_id + (f":{r.pid}" if r.pid else "")
                await emit(Event("Warning", "RecycleRejected", f"{target}: {r.reason} (request {value!r})"))
