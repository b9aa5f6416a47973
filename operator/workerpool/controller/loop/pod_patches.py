"""A pool's patches of its own pods' annotations and conditions (busy marks, readiness gates),
sent by a task of the pool's: a round hands them over and goes on.

Like its status (`api_io.StatusWriter`), a pool's marks wait their turn in the write
limiter behind every pool's pod creates and Events; a round that waited for them would
hold the pool's next scale-up behind them. The newest patch per pod and kind wins while
it waits; one already sent or waiting is not handed over again, so a round that decides
the same mark again (its pod not patched yet) costs no second write. A failed patch is
logged and counted; the pod still shows the old state, so a later round decides it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..ports import ApiError
from ..process import metrics
from .state import PoolState

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (kind, pod)
Send = Callable[[], Awaitable[dict[str, Any] | None]]  # the patched pod, or None when it is gone
Done = Callable[[bool], None]  # told whether the patch was made (False: failed, not wanted, or no pod)


class PodPatches:
    def __init__(self, state: PoolState, namespace: str, name: str) -> None:
        self.state, self.namespace, self.name = state, namespace, name
        self._pending: dict[Key, tuple[Hashable, Send, Done]] = {}
        self._sending: tuple[Key, Hashable] | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, key: Key, what: Hashable, send: Send, done: Done) -> None:
        """Patch `key`'s pod to `what` (newest wins); nothing when that is already on its way."""
        waiting = self._pending.get(key)
        if self._sending == (key, what) or (waiting is not None and waiting[0] == what):
            return
        self._pending[key] = (what, send, done)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send_all(), name=f"pod-patches-{self.namespace}-{self.name}")

    async def settled(self) -> None:
        """Return when nothing is pending (tests; a clean stop)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def stop(self) -> None:
        """No more patches (leadership lost, the pool gone): what waits is dropped."""
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _send_all(self) -> None:
        while self._pending:
            key = next(iter(self._pending))
            what, send, done = self._pending.pop(key)
            self._sending = (key, what)
            try:
                patched = await send()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failure of one patch is not the pool's: a later round tries again
                self._failed(key, exc)
                done(False)
                continue
            finally:
                self._sending = None
            if patched is not None:
                self.state.patched(patched)
            done(patched is not None)  # None: the pod is gone, or the patch was no longer wanted

    def _failed(self, key: Key, exc: Exception) -> None:
        reason = f"api{exc.status}" if isinstance(exc, ApiError) else "patch"
        metrics.ERRORS.labels(self.namespace, self.name, reason).inc()
        why = f"API error {exc.status} {exc.reason}" if isinstance(exc, ApiError) else type(exc).__name__
        log.warning("%s/%s: %s of pod %s failed (%s); a later round tries again", self.namespace, self.name, *key, why)
