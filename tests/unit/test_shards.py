"""Shards: every pool on exactly one shard, by a hash that every process computes alike."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.controller.process.config import OperatorConfig, OperatorConfigError
from workerpool.decide.shards import Shard, shard_of

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(namespace=names, name=names, count=st.integers(1, 16))
def test_every_pool_has_exactly_one_shard(namespace: str, name: str, count: int) -> None:
    owners = [i for i in range(count) if Shard(i, count).owns(namespace, name)]
    assert owners == [shard_of(namespace, name, count)]


def test_the_hash_is_the_same_in_another_process() -> None:
    """Not Python's salted hash(): a restarted or second process must agree."""
    here = [shard_of("team", f"pool-{i}", 3) for i in range(20)]
    code = "from workerpool.decide.shards import shard_of; print([shard_of('team', f'pool-{i}', 3) for i in range(20)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip() == str(here)


def test_pools_spread_over_the_shards() -> None:
    spread = Counter(shard_of("ns", f"pool-{i}", 3) for i in range(3000))
    assert all(900 < n < 1100 for n in spread.values()), spread


@pytest.mark.parametrize(("text", "shard"), [("", Shard(0, 1)), ("0/3", Shard(0, 3)), (" 2 / 3 ", Shard(2, 3))])
def test_parse(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_a_bad_shard_is_refused_at_start_up(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKERPOOL_SHARD", text)
    with pytest.raises(OperatorConfigError, match="WORKERPOOL_SHARD"):
        OperatorConfig.from_env()


def test_one_shard_keeps_the_lease_name() -> None:
    assert Shard().suffix == "" and Shard(1, 3).suffix == "-shard-1-of-3"
