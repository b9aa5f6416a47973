"""Thousands of arbitrary inputs for every parser the operator and the worker expose to the outside."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.contracts.wire import WireFormatError, parse_command, parse_heartbeat, parse_registration
from workerpool.decide.recycle import RecycleRequestError, parse_request

pytestmark = pytest.mark.faults

MANY = settings(max_examples=5000, deadline=None)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)


@MANY
@given(
    fields=st.dictionaries(
        st.text(max_size=15) | st.binary(max_size=15), st.text(max_size=40) | st.binary(max_size=40), max_size=12
    )
)
def test_registration_hashes(fields: dict[Any, Any]) -> None:
    with contextlib.suppress(WireFormatError):
        parse_registration("w", fields)


@MANY
@given(raw=st.text(max_size=200) | st.binary(max_size=200) | json_like.map(repr))
def test_heartbeats_and_commands(raw: str | bytes) -> None:
    for parse in (parse_heartbeat, parse_command):
        with contextlib.suppress(WireFormatError):
            parse(raw)


@MANY
@given(raw=st.text(max_size=120))
def test_annotation_values(raw: str) -> None:
    with contextlib.suppress(RecycleRequestError):
        parse_request(raw)
