"""Every parser the operator and the worker expose to the outside, under thousands of
inputs: random bytes, and mutations of real messages (the seed's heartbeat, Bifrost's
recorded samples) so that many inputs parse. Each input either raises the parser's one
declared error, with a message, or parses into something that holds what the contract
promises: it round-trips, its counts and states agree, the targets are well-formed.
(tests/unit/test_wire.py has the examples; this file has the volume.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.contracts.report import WorkerReport
from workerpool.contracts.wire import (
    WireFormatError,
    parse_command,
    parse_heartbeat,
    parse_registration,
    registration_fields,
    to_wire,
)
from workerpool.decide.recycle import MAX_REQUEST_LENGTH, RecycleRequestError, parse_request
from workerpool.protocols import BIFROST, SEED
from workerpool.protocols.base import Heartbeat, Ignored, Offline

from ..unit.test_wire import SEED_HEARTBEAT
from .volume import fuzz_examples

pytestmark = pytest.mark.faults
T = TypeVar("T")

MANY = settings(max_examples=fuzz_examples(800), deadline=None)
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bifrost"
BIFROST_MESSAGES = [
    json.loads((SAMPLES / f"{n}.json").read_text()) for n in ("heartbeat-busy", "heartbeat-idle", "worker-offline")
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
# Values near the valid ones (small counts and pids, edge cases), or anything at all.
near_values = st.integers(-2, 20) | st.sampled_from([None, "", "0", "12", True, 1.0, [], {}]) | json_values
COMMAND = {"type": "recycle", "pid": 12}
noise = st.text(max_size=200) | st.binary(max_size=200) | json_values.map(json.dumps)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[str]:
    """The message with some fields replaced, dropped or added (most stay valid, some do not)."""
    keys = st.sampled_from(sorted(base)) | st.text(max_size=8)
    return st.tuples(
        st.dictionaries(keys, near_values, max_size=3), st.sets(st.sampled_from(sorted(base)), max_size=2)
    ).map(lambda change: json.dumps({k: v for k, v in {**base, **change[0]}.items() if k not in change[1]}))


def attempt(error: type[Exception], parse: Callable[[], T]) -> tuple[T | None, str]:
    """What the parser returned, or the message of its one declared error (anything else propagates)."""
    try:
        return parse(), ""
    except error as exc:
        return None, str(exc)


def with_processes(base: dict[str, Any]) -> st.SearchStrategy[str]:
    """The heartbeat with its processes' states and executions shuffled (one execution per busy process)."""
    execution = base["processes"][0]["execution"]
    process = st.fixed_dictionaries(
        {
            "state": st.sampled_from(["idle", "busy", "killed", "dead"]),
            "execution": st.sampled_from([None, execution, {}]),
        }
    )
    processes = st.lists(process, max_size=3).map(
        lambda ps: [{**base["processes"][0], "pid": 100 + i, **p} for i, p in enumerate(ps)]
    )
    return processes.map(lambda ps: json.dumps({**base, "processes": ps}))


def consistent(report: WorkerReport) -> None:
    """What a parsed report promises the decisions: a worker id, counts that are counts."""
    assert report.worker_id
    assert min(report.pool_size, report.idle_count, report.busy_count) >= 0
    for process in report.processes:
        assert process.state in ("idle", "busy", "killed")


@MANY
@given(raw=noise | mutated(SEED_HEARTBEAT) | with_processes(SEED_HEARTBEAT))
def test_seed_heartbeats(raw: str | bytes) -> None:
    hb, error = attempt(WireFormatError, lambda: parse_heartbeat(raw))
    if hb is None:
        assert error
        return
    assert parse_heartbeat(json.dumps(to_wire(hb))) == hb, "a parsed heartbeat round-trips"
    for process in hb.processes:
        assert (process.state == "busy") == (process.execution is not None), process


@MANY
@given(raw=noise | mutated(COMMAND))
def test_commands(raw: str | bytes) -> None:
    command, error = attempt(WireFormatError, lambda: parse_command(raw))
    if command is None:
        assert error
        return
    assert command.type == "recycle"
    assert command.pid is None or (type(command.pid) is int and command.pid > 0)


@MANY
@given(
    fields=st.dictionaries(
        st.sampled_from(["started_at", "hostname", "min_workers", "max_workers", "pool_size", "idle_count",
                         "busy_count", "heartbeat", "pool", "namespace"]) | st.text(max_size=10),
        st.text(max_size=40) | st.binary(max_size=40) | st.sampled_from([json.dumps(SEED_HEARTBEAT), "3", "0"]),
        max_size=12,
    )
)  # fmt: skip
def test_seed_registration_hashes(fields: dict[Any, Any]) -> None:
    reg, error = attempt(WireFormatError, lambda: parse_registration("w1", fields))
    if reg is None:
        assert error.startswith("worker:w1"), error  # names the key it could not read
        return
    assert reg.info.worker_id == "w1"
    assert min(reg.info.pool_size, reg.info.idle_count, reg.info.busy_count) >= 0


@MANY
@given(raw=noise | st.sampled_from(BIFROST_MESSAGES).flatmap(mutated))
def test_bifrost_messages(raw: str | bytes) -> None:
    heard, error = attempt(WireFormatError, lambda: BIFROST.parse_message(raw))
    if heard is None:
        assert error
        return
    assert isinstance(heard, Heartbeat | Offline | Ignored)
    if isinstance(heard, Heartbeat):
        consistent(heard.report)
    elif isinstance(heard, Offline):
        assert heard.worker_id


@MANY
@given(raw=noise | mutated(SEED_HEARTBEAT))
def test_seed_protocol_messages(raw: str | bytes) -> None:
    heard, error = attempt(WireFormatError, lambda: SEED.parse_message(raw))
    if heard is None:
        assert error
        return
    if isinstance(heard, Heartbeat):
        consistent(heard.report)


targets = (
    st.sampled_from(["*", "wp-a-1", "w:0", "w:-1", "W!", " ", ",", "@", "a@b"])
    | st.tuples(st.sampled_from(["wp-a-1", "w", "x.y"]), st.integers(-1, 20)).map(lambda wp: f"{wp[0]}:{wp[1]}")
    | st.text(max_size=12)
)


@MANY
@given(
    raw=st.text(max_size=120) | st.lists(targets, max_size=4).map(",".join) | st.just("x" * (MAX_REQUEST_LENGTH + 1))
)
def test_annotation_values(raw: str) -> None:
    request, error = attempt(RecycleRequestError, lambda: parse_request(raw))
    if request is None:
        assert error
        return
    assert len(raw) <= MAX_REQUEST_LENGTH and request.raw == raw
    assert request.targets, "a request names at least one target"
    for target in request.targets:
        assert target.worker_id == "*" or (
            target.worker_id and "," not in target.worker_id and "@" not in target.worker_id
        )
        assert target.pid is None or target.pid > 0
    assert request.token is None or (request.token and "@" not in request.token)


def test_the_messages_mutated_above_parse_as_they_are() -> None:
    """The mutations start from valid messages, so the success branches above do run."""
    hb = parse_heartbeat(json.dumps(SEED_HEARTBEAT))
    fields = registration_fields(hb, heartbeat_json=json.dumps(SEED_HEARTBEAT))
    assert parse_registration(hb.worker_id, fields).info.pool_size == hb.pool_size
    assert parse_command(json.dumps(COMMAND)).pid == 12
    assert [type(BIFROST.parse_message(json.dumps(m))) for m in BIFROST_MESSAGES] == [Heartbeat, Heartbeat, Offline]
    assert parse_request("wp-a-1:12,*@tok").token == "tok"
