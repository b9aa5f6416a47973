"""The seed's wire contract: parsing what Redis holds, with clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.shapes import EXECUTION_KEYS, PROCESS_KEYS, RESULT_KEYS
from workerpool.contracts.wire import (
    ExecutionResult,
    ProcessInfo,
    RecycleCommand,
    WireFormatError,
    WorkerHeartbeat,
    WorkerInfo,
    parse_command,
    parse_heartbeat,
    parse_registration,
    registration_fields,
    to_status,
    to_wire,
)

# The seed's heartbeat (Task 4.7) with the process fields of Task 4.1 "After".
SEED_HEARTBEAT: dict[str, Any] = {
    "type": "worker_heartbeat",
    "worker_id": "default-x7k2p",
    "timestamp": "2026-11-26T10:00:05+00:00",
    "started_at": "2026-11-26T09:00:00+00:00",
    "hostname": "default-x7k2p",
    "min_workers": 2,
    "max_workers": 10,
    "pool_size": 3,
    "idle_count": 2,
    "busy_count": 1,
    "processes": [
        {
            "pid": 4711,
            "process_id": "process-1",
            "state": "busy",
            "memory_mb": 61.5,
            "uptime_seconds": 3600.0,
            "executions_completed": 12,
            "execution": {
                "execution_id": "exec-42",
                "started_at": "2026-11-26T10:00:00+00:00",
                "elapsed_seconds": 5.0,
            },
        },
        {
            "pid": 4712,
            "process_id": "process-2",
            "state": "idle",
            "memory_mb": 58.0,
            "uptime_seconds": 3600.0,
            "executions_completed": 9,
            "execution": None,
        },
        {
            "pid": 4713,
            "process_id": "process-3",
            "state": "killed",
            "memory_mb": 0.0,
            "uptime_seconds": 12.0,
            "executions_completed": 0,
            "execution": None,
        },
    ],
}

# The seed's GET /workers reads these hash fields (Task 4.2): all strings.
SEED_HASH = {
    b"started_at": b"2026-11-26T09:00:00+00:00",
    b"hostname": b"default-x7k2p",
    b"min_workers": b"2",
    b"max_workers": b"10",
    b"pool_size": b"3",
    b"idle_count": b"2",
    b"busy_count": b"1",
}


def test_seed_heartbeat_parses() -> None:
    hb = parse_heartbeat(json.dumps(SEED_HEARTBEAT))
    assert hb.worker_id == "default-x7k2p"
    assert [p.state for p in hb.processes] == ["busy", "idle", "killed"]
    assert hb.processes[0].execution is not None
    assert hb.processes[0].execution.execution_id == "exec-42"


def test_heartbeat_wire_form_is_exactly_the_contract_shape() -> None:
    hb = parse_heartbeat(json.dumps(SEED_HEARTBEAT))
    wire = to_wire(hb)
    assert set(wire) == set(SEED_HEARTBEAT) | {"pool", "namespace"}
    assert set(wire["processes"][0]) == PROCESS_KEYS
    assert set(wire["processes"][0]["execution"]) == EXECUTION_KEYS


def test_seed_hash_parses_with_seed_defaults() -> None:
    reg = parse_registration("default-x7k2p", SEED_HASH)
    assert reg.info.pool_size == 3
    assert reg.info.processes == []
    minimal = parse_registration("w", {"started_at": "2026-11-26T09:00:00+00:00"})
    assert (minimal.info.hostname, minimal.info.min_workers, minimal.info.max_workers) == ("unknown", 2, 10)
    assert (minimal.info.pool_size, minimal.info.idle_count, minimal.info.busy_count) == (0, 0, 0)


def test_registration_with_heartbeat_field_carries_processes() -> None:
    hb = parse_heartbeat(json.dumps({**SEED_HEARTBEAT, "pool": "default", "namespace": "bifrost"}))
    fields = registration_fields(hb, heartbeat_json=json.dumps(to_wire(hb)))
    assert all(isinstance(v, str) for v in fields.values())
    reg = parse_registration(hb.worker_id, fields)
    assert reg.info == hb.worker_info()
    assert (reg.pool, reg.namespace) == ("default", "bifrost")
    assert reg.heartbeat_at == hb.timestamp


def test_busy_process_without_execution_is_rejected() -> None:
    bad = json.loads(json.dumps(SEED_HEARTBEAT))
    bad["processes"][0]["execution"] = None
    with pytest.raises(WireFormatError, match=r"processes\.0.*execution"):
        parse_heartbeat(json.dumps(bad))


def test_idle_process_with_execution_is_rejected() -> None:
    bad = json.loads(json.dumps(SEED_HEARTBEAT))
    bad["processes"][1]["execution"] = bad["processes"][0]["execution"]
    with pytest.raises(WireFormatError, match="execution"):
        parse_heartbeat(json.dumps(bad))


@pytest.mark.parametrize("state", ["draining", "pending_kill", "active", "IDLE", ""])
def test_states_outside_the_seed_are_rejected(state: str) -> None:
    bad = json.loads(json.dumps(SEED_HEARTBEAT))
    bad["processes"][1]["state"] = state
    with pytest.raises(WireFormatError, match=r"processes\.1\.state"):
        parse_heartbeat(json.dumps(bad))


@pytest.mark.parametrize("value", [b"abc", b"", b"1.5", b"-1", b"0x10", "\uff13".encode()])
def test_non_numeric_pool_size_is_rejected_naming_the_field(value: bytes) -> None:
    with pytest.raises(WireFormatError, match="pool_size"):
        parse_registration("w1", {**SEED_HASH, b"pool_size": value})


def test_missing_started_at_is_rejected() -> None:
    fields = {k: v for k, v in SEED_HASH.items() if k != b"started_at"}
    with pytest.raises(WireFormatError, match="started_at"):
        parse_registration("w1", fields)


def test_bad_started_at_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="started_at"):
        parse_registration("w1", {**SEED_HASH, b"started_at": b"yesterday"})


@pytest.mark.parametrize("raw", ["{", "not json", "[1, 2]", "null", '"text"', b"\xff\xfe"])
def test_bad_json_is_rejected(raw: str | bytes) -> None:
    with pytest.raises(WireFormatError, match="heartbeat"):
        parse_heartbeat(raw)


def test_bad_heartbeat_field_in_hash_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="heartbeat: not valid JSON"):
        parse_registration("w1", {**SEED_HASH, b"heartbeat": b"{oops"})


def test_heartbeat_of_another_worker_in_hash_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="does not match"):
        parse_registration("other", {**SEED_HASH, b"heartbeat": json.dumps(SEED_HEARTBEAT).encode()})


def test_wrong_heartbeat_type_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="type"):
        parse_heartbeat(json.dumps({**SEED_HEARTBEAT, "type": "worker_goodbye"}))


def test_thread_fields_are_not_part_of_the_models() -> None:
    for model in (WorkerInfo, ProcessInfo, WorkerHeartbeat):
        for name in model.model_fields:
            assert not any(word in name for word in ("thread", "drain", "blacklist", "kill"))


def test_round_trip_wire_status_wire_is_lossless() -> None:
    info = parse_heartbeat(json.dumps(SEED_HEARTBEAT)).worker_info()
    status = to_status(info)
    assert "workerId" in status
    assert "minWorkers" in status
    assert "processId" in status["processes"][0]
    assert "executionsCompleted" in status["processes"][0]
    back = WorkerInfo.model_validate(status)
    assert back == info
    assert to_wire(back) == to_wire(info)


def test_recycle_command_shapes() -> None:
    assert to_wire(RecycleCommand(type="recycle", pid=None)) == {"type": "recycle", "pid": None}
    assert to_wire(RecycleCommand(type="recycle", pid=4711)) == {"type": "recycle", "pid": 4711}
    assert parse_command('{"type":"recycle","pid":4711}').pid == 4711
    assert parse_command('{"type":"recycle","pid":null}').pid is None
    for bad in (
        '{"type":"recycle","pid":"4711"}',
        '{"type":"recycle","pid":true}',
        '{"type":"recycle","pid":-1}',
        '{"type":"shutdown"}',
        '{"pid":1}',
    ):
        with pytest.raises(WireFormatError, match="command"):
            parse_command(bad)


def test_execution_result_shape() -> None:
    result = ExecutionResult(execution_id="e", success=True, result=3, duration_ms=1.5, worker_id="w")
    assert set(to_wire(result)) == RESULT_KEYS


# --- property tests: arbitrary contents never escape as anything but WireFormatError ---

text_or_bytes = st.one_of(st.text(max_size=30), st.binary(max_size=30))
