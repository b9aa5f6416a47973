"""Reading what workers and queues left in Redis, in pipelined round trips, and refusing
what is not theirs: an error reply inside a pipeline (a key of another type: anyone may
`SET worker:x 1`) is one key's problem, never a fault of the whole Redis; a worker's
replies over the byte limit are refused before they are parsed; every refusal is
counted by kind and reason and logged at a bounded rate."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from ...contracts.report import WorkerReport
from ...contracts.wire import MAX_MESSAGE_BYTES, QueueStatus, TooLargeError, WireFormatError, check_size, reply_size
from ...protocols import Heard, WorkerProtocol
from ..process import metrics
from ..process.lograte import RateLimitedLog


class WrongTypeError(WireFormatError):
    """A worker's key holds another type than its protocol writes."""


@dataclass
class Refusals:
    """What the hub refused, counted by kind and reason, and logged at a bounded rate."""

    label: str
    log: RateLimitedLog

    def refuse(self, kind: str, exc: WireFormatError) -> None:
        reason = refusal_reason(exc)
        metrics.MALFORMED.labels(kind=kind, reason=reason).inc()
        self.log.warning(f"{kind}:{reason}", "%s: skipping %s (%s): %s", self.label, kind, reason, exc)


def refusal_reason(exc: WireFormatError) -> str:
    if isinstance(exc, TooLargeError):
        return "too_large"
    return "wrong_type" if isinstance(exc, WrongTypeError) else "invalid"


@dataclass
class QueueReadings:
    """The last reading of each queue key, and why a key cannot be read (not a sorted set)."""

    readings: dict[str, QueueStatus]
    faults: dict[str, str]

    def update(self, readings: dict[str, QueueStatus], faults: dict[str, str]) -> list[tuple[str, QueueStatus]]:
        """Take a new round of readings; the keys whose depth moved (or were read for the first time)."""
        self.faults = faults
        moved = [(k, q) for k, q in readings.items() if (p := self.readings.get(k)) is None or p.depth != q.depth]
        self.readings.update(readings)
        return moved

    def current(self, key: str, loop_error: str | None) -> QueueStatus | None:
        """The last reading of `key`, None while it cannot be read (the loop's or the key's fault)."""
        return None if loop_error is not None or key in self.faults else self.readings.get(key)


def parse_channel_message(protocol: WorkerProtocol, raw: object, limit: int, refusals: Refusals) -> Heard | None:
    """A message on the heartbeat channel, parsed; None when it is not a string or is refused."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        check_size(raw, limit, "heartbeat channel message")
        return protocol.parse_message(raw)
    except WireFormatError as exc:
        refusals.refuse("heartbeat", exc)
        return None


async def read_queues(
    client: aioredis.Redis, keys: list[str], now: float
) -> tuple[dict[str, QueueStatus], dict[str, str]]:
    """The depth and oldest entry's age (at `now`, epoch seconds) of each queue sorted set, in one
    round trip; and why each key that is not a sorted set (an error reply) cannot be read."""
    async with client.pipeline(transaction=False) as p:
        for key in keys:
            p.zcard(key)
            p.zrange(key, 0, 0, withscores=True)
        # An error reply (WRONGTYPE: another kind of key under that name) is one key's
        # problem, not the whole Redis's: returned in place, not raised.
        replies = await p.execute(raise_on_error=False)
    readings, faults = {}, {}
    for i, key in enumerate(keys):
        depth, oldest = replies[2 * i], replies[2 * i + 1]
        if raise_unless_wrong_type(depth, oldest):
            faults[key] = f"queue key {key!r} is not a sorted set (WRONGTYPE): demand unknown"
            continue
        age = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
        readings[key] = QueueStatus(depth=int(depth), oldest_age_seconds=round(min(age, 1e9), 1))
    return readings, faults


async def read_reports(
    client: aioredis.Redis, protocol: WorkerProtocol, ids: list[str], refusals: Refusals, limit: int
) -> dict[str, WorkerReport]:
    """The workers' reports, read in one pipelined round trip (the protocol names the reads)."""
    if not ids:
        return {}
    reads = [protocol.worker_reads(worker_id) for worker_id in ids]
    async with client.pipeline(transaction=False) as p:
        for per_worker in reads:
            for command, key in per_worker:
                getattr(p, command)(key)
        # A key of another type under a worker's name (anyone may SET worker:x 1) is that
        # worker's malformed registration, not a fault of the whole Redis.
        replies = await p.execute(raise_on_error=False)
    return parse_reports(protocol, ids, [len(r) for r in reads], replies, refusals, limit)


def parse_reports(
    protocol: WorkerProtocol,
    ids: list[str],
    counts: list[int],
    replies: list[object],
    refusals: Refusals,
    limit: int = MAX_MESSAGE_BYTES,
) -> dict[str, WorkerReport]:
    """The reports a resync read (`counts[i]` replies for `ids[i]`); expired ones skipped, and
    malformed, oversized or wrong-typed ones refused (counted, logged at a bounded rate)."""
    regs: dict[str, WorkerReport] = {}
    at = 0
    for worker_id, count in zip(ids, counts, strict=True):
        mine, at = replies[at : at + count], at + count
        try:
            report = parse_worker_reads(protocol, worker_id, mine, limit)
        except WireFormatError as exc:
            refusals.refuse("registration", exc)
            continue
        if report is not None:  # None: expired between SCAN and the read
            regs[worker_id] = report
    return regs


def parse_worker_reads(
    protocol: WorkerProtocol, worker_id: str, replies: list[object], limit: int
) -> WorkerReport | None:
    """One worker's replies, refused before parsing when one is an error or they are too large."""
    if raise_unless_wrong_type(*replies):
        raise WrongTypeError(f"worker {worker_id!r}: a key of the wrong type ({_first_error(replies)})")
    size = sum(reply_size(r) for r in replies)
    if size > limit:
        raise TooLargeError(f"worker {worker_id!r}: registration of {size} bytes, over the limit of {limit}")
    return protocol.parse_reads(worker_id, replies)


def raise_unless_wrong_type(*replies: object) -> bool:
    """Whether an error reply among these is a key of the wrong type (one key's problem); any
    other error (NOPERM, a read-only replica, ...) is the Redis's, and is raised as such."""
    errors = [r for r in replies if isinstance(r, Exception)]
    for error in errors:
        if not str(error).startswith("WRONGTYPE"):
            raise error
    return bool(errors)


def _first_error(replies: list[object]) -> str:
    error = next(r for r in replies if isinstance(r, Exception))
    return str(error).split(" ", 1)[0][:40] or type(error).__name__
