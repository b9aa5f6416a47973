"""The seed's Redis wire contract (DESIGN §3) as pydantic models, and parsing of
what Redis really holds: registration hashes (every value a string) and JSON
messages (heartbeats, commands, execution contexts and results).

Field names are exactly the seed's (snake_case). The same models render the
camelCase view used in the WorkerPool status (`to_status`), so there is one
mapping between the two spellings: the alias generator below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

ProcessState = Literal["idle", "busy", "killed"]
PROCESS_STATES: tuple[ProcessState, ...] = ("idle", "busy", "killed")


class WireFormatError(ValueError):
    """Malformed data from Redis or a peer; the message names the offending field."""


class TooLargeError(WireFormatError):
    """Data over its byte limit, refused before it was parsed."""


# --- bounds on what a worker sends ----------------------------------------------------------
# Whatever a worker (or anything else on its Redis) writes is untrusted: every string,
# list and number is bounded, so a report always fits in a status and a reply costs
# O(limit) to refuse. Generous for real workers: pod names are 253 characters at most,
# the CRD's processes.max is 256.
MAX_TEXT = 1024  # characters of any string on the wire (ids, hostnames, states)
MAX_PROCESSES = 1024  # processes in one report
MAX_INT = 2**53 - 1  # every JSON reader carries it exactly (Kubernetes' int64 too)
MAX_SECONDS = 1e10  # 300 years: a duration or an age
MAX_MEGABYTES = 1e9  # a process's memory
# The bytes of one message (a heartbeat, a registration's fields) parsed at all; the
# operator's WORKERPOOL_MAX_MESSAGE_BYTES overrides it.
MAX_MESSAGE_BYTES = 256 * 1024

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Pid = Annotated[int, Field(gt=0, le=MAX_INT)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Megabytes = Annotated[float, Field(ge=0, le=MAX_MEGABYTES, allow_inf_nan=False)]
# A naive time next to an aware one cannot even be compared: only aware ones are accepted.
Moment = AwareDatetime


def check_size(raw: bytes | str, limit: int, what: str) -> None:
    """Refuse `raw` (TooLargeError) when it is over `limit` bytes, before anything parses it
    (a str, which only tests hand in, by its length in characters)."""
    size = len(raw)
    if size > limit:
        raise TooLargeError(f"{what}: {size} bytes, over the limit of {limit}")


class ContractModel(BaseModel):
    """Base of every contract model: snake_case names, camelCase aliases.

    Either spelling is accepted on input; `to_wire` and `to_status` choose the
    spelling on output. Unknown fields are ignored so that newer peers can add
    fields without breaking older readers.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="ignore",
        frozen=True,
        # Errors name fields as the seed does (snake_case), whatever spelling came in.
        loc_by_alias=False,
    )


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The snake_case JSON-ready form used on Redis."""
    return model.model_dump(mode="json")


def to_status(model: BaseModel) -> dict[str, Any]:
    """The camelCase JSON-ready form used in the Kubernetes resource."""
    return model.model_dump(mode="json", by_alias=True)


# --- the seed's schemas (Task 4.1, "After") ---------------------------------


class ExecutionInfo(ContractModel):
    execution_id: Id
    started_at: Moment
    elapsed_seconds: Seconds


class ProcessInfo(ContractModel):
    pid: Pid
    process_id: Text
    state: ProcessState
    memory_mb: Megabytes
    uptime_seconds: Seconds
    executions_completed: Count
    execution: ExecutionInfo | None = None

    @model_validator(mode="after")
    def _execution_iff_busy(self) -> ProcessInfo:
        # One execution per process: a busy process is running exactly one,
        # an idle or killed one is running none.
        if self.state == "busy" and self.execution is None:
            raise ValueError("execution: a busy process must report its execution")
        if self.state != "busy" and self.execution is not None:
            raise ValueError(f"execution: a {self.state} process cannot have an execution")
        return self


class WorkerInfo(ContractModel):
    worker_id: Id
    started_at: Moment
    hostname: Text
    # The seed's names for this worker's *process* bounds (spec.processes.min/max), not the
    # pool's pods (spec.minWorkers/maxWorkers); protocols/seed.py:pod_env maps one to the other.
    min_workers: Count = 2
    max_workers: Count = 10
    pool_size: Count
    idle_count: Count
    busy_count: Count = 0
    processes: list[ProcessInfo] = Field(default_factory=list, max_length=MAX_PROCESSES)


class WorkerHeartbeat(WorkerInfo):
    """Published on `bifrost:workers:heartbeat` (Task 4.7).

    `pool` and `namespace` are our extension: several pools may share a Redis,
    and pod names alone can collide across namespaces.
    """

    type: Literal["worker_heartbeat"] = "worker_heartbeat"
    timestamp: Moment
    pool: Text | None = None
    namespace: Text | None = None

    def worker_info(self) -> WorkerInfo:
        # Already validated as a heartbeat: construct, don't validate again (this
        # runs for every heartbeat the operator receives).
        return WorkerInfo.model_construct(**{name: getattr(self, name) for name in WorkerInfo.model_fields})


class RecycleCommand(ContractModel):
    """Published on `worker:{worker_id}:commands` (Task 4.3). pid None = any idle process."""

    type: Literal["recycle"]
    pid: StrictInt | None = Field(default=None, gt=0, le=MAX_INT)


class QueueStatus(ContractModel):
    """The queue as the operator reports it (Task 4.4)."""

    depth: Count = 0
    oldest_age_seconds: Seconds = 0.0


class ExecutionContext(ContractModel):
    """What the reference worker reads from `bifrost:exec:{id}:context`."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(default=None, gt=0)


class ExecutionResult(ContractModel):
    """Written to `bifrost:exec:{id}:result` and published on `bifrost:executions:results`."""

    execution_id: str
    success: bool
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    worker_id: str


# --- parsing what Redis holds ---------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def excerpt(value: object, limit: int = 60) -> str:
    """A refused value as a log line or an Event shows it: its repr, cut (an input may be 256 KiB)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    given = repr(value)
    return given if len(given) <= limit else given[: limit - 3] + "..."


def describe_validation_error(err: ValidationError, *, limit: int = 3) -> str:
    """One line naming each offending field, with the value that was given."""
    parts = []
    errors = err.errors(include_url=False)  # rendered once (a message may hold thousands)
    for item in errors[:limit]:
        loc = ".".join(str(p) for p in item["loc"]) or "(message)"
        parts.append(f"{loc}: {item['msg']} (got {excerpt(item.get('input'))})")
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _decode(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def parse_json_message(model: type[_M], raw: bytes | str, *, what: str) -> _M:
    """Parse a JSON message into `model`, raising WireFormatError that names the field."""
    try:  # the hot path (1000 heartbeats a second at scale): pydantic-core parses and validates in one go
        return model.model_validate_json(raw)
    except ValidationError:
        pass  # parse again below, for an error message that says what is wrong
    return validate_message(model, json_object(raw, what=what), what=what)


def json_object(raw: bytes | str, *, what: str) -> dict[str, Any]:
    """A JSON object from Redis, or WireFormatError saying why it is not one."""
    try:
        data = json.loads(_decode(raw))
    except (ValueError, RecursionError) as exc:
        raise WireFormatError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WireFormatError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def validate_message(model: type[_M], data: Mapping[str, Any], *, what: str) -> _M:
    """`data` as `model`, or WireFormatError naming the offending fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise WireFormatError(f"{what}: {describe_validation_error(exc)}") from None


def parse_heartbeat(raw: bytes | str) -> WorkerHeartbeat:
    return parse_json_message(WorkerHeartbeat, raw, what="heartbeat")


def parse_command(raw: bytes | str) -> RecycleCommand:
    return parse_json_message(RecycleCommand, raw, what="command")


class Registration(ContractModel):
    """A parsed `worker:{id}` hash: the seed's WorkerInfo plus our extensions.

    The hash carries counts only; the per-process list comes from the last
    heartbeat the worker stored in the `heartbeat` field, when there is one.
    """

    info: WorkerInfo
    pool: Text | None = None
    namespace: Text | None = None
    heartbeat_at: Moment | None = None


_INT_FIELDS = ("min_workers", "max_workers", "pool_size", "idle_count", "busy_count")


def reply_size(reply: object) -> int:
    """The bytes of a Redis reply as redis-py returned it (a string, a hash's names and values)."""
    if isinstance(reply, bytes | str):
        return len(reply)
    if isinstance(reply, Mapping):
        return sum(reply_size(k) + reply_size(v) for k, v in reply.items())
    return 0


def parse_registration(worker_id: str, fields: Mapping[Any, Any]) -> Registration:
    """Parse a registration hash (as HGETALL returns it: bytes or str, all strings).

    Required: `started_at`. The other seed fields default as in the seed's
    GET /workers (hostname "unknown", min 2, max 10, counts 0). A present but
    malformed field is an error naming that field, never a silent default.
    """
    what = f"worker:{worker_id}"
    data = {_decode(k): _decode(v) for k, v in fields.items()}
    if not data:
        raise WireFormatError(f"{what}: empty or missing hash")
    if "started_at" not in data:
        raise WireFormatError(f"{what}: started_at: field required")
    info: dict[str, Any] = {
        "worker_id": worker_id,
        "started_at": data["started_at"],
        "hostname": data.get("hostname", "unknown"),
        "pool_size": 0,
        "idle_count": 0,
    }
    for name in _INT_FIELDS:
        if name in data:
            text = data[name].strip()
            # Redis holds decimal strings; "1.0", "0x1", " 1" are not what a worker writes, and
            # 16 digits are more than MAX_INT has (int() of thousands of digits raises ValueError).
            if not (text.isascii() and text.isdigit() and len(text) <= 16):
                got = excerpt(data[name])
                raise WireFormatError(f"{what}: {name}: expected a non-negative decimal integer, got {got}")
            info[name] = int(text)
    heartbeat_at: datetime | None = None
    if "heartbeat" in data:
        hb = parse_json_message(WorkerHeartbeat, data["heartbeat"], what=f"{what}: heartbeat")
        if hb.worker_id != worker_id:
            raise WireFormatError(f"{what}: heartbeat: worker_id {hb.worker_id!r} does not match the key")
        info["processes"] = [to_wire(p) for p in hb.processes]
        heartbeat_at = hb.timestamp
    try:
        return Registration(
            info=WorkerInfo.model_validate(info),
            pool=data.get("pool"),
            namespace=data.get("namespace"),
            heartbeat_at=heartbeat_at,
        )
    except ValidationError as exc:
        raise WireFormatError(f"{what}: {describe_validation_error(exc)}") from None


def registration_fields(hb: WorkerHeartbeat, *, heartbeat_json: str) -> dict[str, str]:
    """The registration hash a worker writes for a heartbeat: every value a string."""
    fields = {
        "started_at": hb.started_at.isoformat(),
        "hostname": hb.hostname,
        **{name: str(getattr(hb, name)) for name in _INT_FIELDS},
        "heartbeat": heartbeat_json,
    }
    if hb.pool is not None:
        fields["pool"] = hb.pool
    if hb.namespace is not None:
        fields["namespace"] = hb.namespace
    return fields
