"""Log lines at a bounded rate: what a worker or a Redis sends can be wrong thousands of
times a second, and one line each would be the operator's own denial of service. The
first line of a kind is logged at once; more of it within `interval` are counted and
told with the next line of that kind."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .clock import SYSTEM_CLOCK, Clock


@dataclass
class RateLimitedLog:
    logger: logging.Logger
    interval: float = 10.0  # s between two lines of one kind
    clock: Clock = SYSTEM_CLOCK
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def warning(self, kind: str, message: str, *args: object, exc_info: BaseException | None = None) -> bool:
        """Log (and return True) unless a line of `kind` was logged within the interval."""
        now = self.clock.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {now - last:.0f} s)" if last is not None else ""
        self._last[kind] = now
        self.logger.warning(message, *args, exc_info=exc_info)
        return True
