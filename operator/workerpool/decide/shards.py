"""Shards: which operator process acts on which WorkerPool.

`--shard I/N` (WORKERPOOL_SHARD, chart `shards`) assigns each pool to exactly
one of N shards by a stable hash of its namespace/name: the same answer in
every process, across restarts and Python versions (never `hash()`, which is
salted per process). Each shard elects its own leader (a Lease per shard);
every process still follows every pool and pod, so any of them can answer an
eviction, and a shard's standby is warm.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_of(namespace: str, name: str, count: int) -> int:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected I/N with 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """ "I/N" (empty: the only shard)."""
        if not text.strip():
            return cls()
        match = _FORM.match(text)
        if match is None:
            raise ValueError(f"shard {text!r}: expected I/N, e.g. 0/3")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, namespace: str, name: str) -> bool:
        return self.count == 1 or shard_of(namespace, name, self.count) == self.index

    @property
    def suffix(self) -> str:
        """For the shard's Lease name ("" for the only shard: the name stays what it was)."""
        return "" if self.count == 1 else f"-shard-{self.index}-of-{self.count}"
