"""A clock the test moves (the `Clock` the operator's parts take): time-based behaviour
is checked in virtual time, without sleeping."""

from __future__ import annotations


class FakeClock:
    def __init__(self, wall: float, mono: float = 1000.0) -> None:
        self.mono, self.wall = mono, wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
