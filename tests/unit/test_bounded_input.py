"""What a worker (or anything else on its Redis) sends is untrusted (DESIGN §3): every
string, list and number is bounded, timestamps carry a zone, and a message over the
byte limit is refused before it is parsed, in time that does not grow with it.

Each case here was accepted, or raised something other than WireFormatError (which
the hub's loops do not expect), before the bounds: checked against the parent commit."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.unit.test_wire import SEED_HASH, SEED_HEARTBEAT
from workerpool.contracts.wire import (
    MAX_PROCESSES,
    MAX_TEXT,
    TooLargeError,
    WireFormatError,
    check_size,
    parse_heartbeat,
    parse_registration,
    reply_size,
)
from workerpool.protocols import BIFROST, SEED


def with_process(**changes: Any) -> dict[str, Any]:
    process = {**SEED_HEARTBEAT["processes"][0], **changes}
    return {**SEED_HEARTBEAT, "processes": [process]}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (with_process(memory_mb=float("inf")), "memory_mb"),
        (with_process(uptime_seconds=1e400), "uptime_seconds"),  # JSON's 1e400 is infinity
        (with_process(executions_completed=2**64), "executions_completed"),
        (with_process(pid=2**63), "pid"),
        ({**SEED_HEARTBEAT, "pool_size": 10**30}, "pool_size"),
        ({**SEED_HEARTBEAT, "hostname": "h" * (MAX_TEXT + 1)}, "hostname"),
        ({**SEED_HEARTBEAT, "pool": "p" * (MAX_TEXT + 1)}, "pool"),
        ({**SEED_HEARTBEAT, "timestamp": "2026-11-26T10:00:05"}, "timestamp"),  # no zone
        ({**SEED_HEARTBEAT, "processes": SEED_HEARTBEAT["processes"][1:] * (MAX_PROCESSES + 1)}, "processes"),
    ],
    ids=["inf", "1e400", "2^64", "pid 2^63", "10^30", "long hostname", "long pool", "naive time", "processes"],
)
def test_a_heartbeat_out_of_bounds_is_refused_naming_the_field(message: dict[str, Any], field: str) -> None:
    raw = json.dumps(message).replace("Infinity", "1e400")
    with pytest.raises(WireFormatError, match=field):
        parse_heartbeat(raw)


def test_a_registration_count_of_thousands_of_digits_is_a_wire_format_error() -> None:
    """int() of 4301 digits raises ValueError, which the hub's resync did not expect (it died)."""
    with pytest.raises(WireFormatError, match="pool_size") as refused:
        parse_registration("w", {**SEED_HASH, "pool_size": "9" * 5000})
    # The refusal names the value, cut: a log line per refusal must not carry 5000 digits.
    assert len(str(refused.value)) < 200 and "(5000 characters)" in str(refused.value)


def test_a_naive_registration_time_is_refused_by_both_protocols() -> None:
    with pytest.raises(WireFormatError, match="started_at"):
        parse_registration("w", {**SEED_HASH, "started_at": "2026-11-26T09:00:00"})
    with pytest.raises(WireFormatError, match="offset"):
        BIFROST.parse_reads("w", [{b"started_at": b"2026-11-26T09:00:00"}, None])
    aware = BIFROST.parse_reads("w", [{b"started_at": b"2026-11-26T09:00:00+00:00"}, None])
    assert aware is not None and aware.started_at.tzinfo is not None


def test_a_naive_time_in_a_bifrost_heartbeat_is_refused() -> None:
    event = {
        "type": "worker_heartbeat",
        "worker_id": "w",
        "started_at": "2026-12-01T21:41:33",
        "timestamp": "2026-12-01T21:41:59+00:00",
    }
    with pytest.raises(WireFormatError, match="started_at"):
        BIFROST.parse_message(json.dumps(event))


def test_the_byte_limit_refuses_before_parsing_in_time_that_does_not_grow_with_the_message() -> None:
    """Before: a 6 MB heartbeat of invalid processes took 42 s to reject on the event loop."""
    invalid = {**SEED_HEARTBEAT, "processes": [{"pid": -1}] * 600_000}
    raw = json.dumps(invalid).encode()
    assert len(raw) > 6_000_000
    started = time.process_time()
    with pytest.raises(TooLargeError, match="over the limit"):
        check_size(raw, 256 * 1024, "heartbeat")
    assert time.process_time() - started < 0.01  # len() of bytes: constant time
    # And under the limit, a message of invalid processes is refused at once, naming the first.
    small = json.dumps({**SEED_HEARTBEAT, "processes": [{"pid": -1}] * 5000})
    with pytest.raises(WireFormatError, match="processes"):
        SEED.parse_message(small)


def test_reply_size_counts_a_hash_and_a_string() -> None:
    assert reply_size({b"ab": b"cde"}) == 5
    assert reply_size(b"xyz") == 3
    assert reply_size(None) == 0
