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

from .api_io import count_write_failure
from .state import PoolState

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (kind, pod)
Send = Callable[[], Awaitable[dict[str, Any] | None]]  # the patched pod, or None when it is gone
Done = Callable[[bool], None]  # told whether the patch was made (False: failed, not wanted, or no pod)
_NOTHING = object()


class PodPatches:
    """One sender per pod and kind, so each patch waits for its own turn at its own priority: a
    mark removal queued behind every status write never holds back another pod's mark."""

    def __init__(self, state: PoolState, namespace: str, name: str) -> None:
        self.state, self.namespace, self.name = state, namespace, name
        self._pending: dict[Key, tuple[Hashable, Send, Done]] = {}
        self._sending: dict[Key, Hashable] = {}
        self._senders: dict[Key, asyncio.Task[None]] = {}

    def submit(self, key: Key, what: Hashable, send: Send, done: Done) -> None:
        """Patch `key`'s pod to `what` (newest wins); nothing when that is already on its way."""
        waiting = self._pending.get(key)
        if self._sending.get(key, _NOTHING) == what or (waiting is not None and waiting[0] == what):
            return
        self._pending[key] = (what, send, done)
        if key not in self._senders:
            self._senders[key] = asyncio.create_task(self._send(key), name=f"pod-patch-{self.namespace}-{key[1]}")

    async def settled(self) -> None:
        """Return when nothing is pending (tests; a clean stop)."""
        while self._senders:
            await asyncio.wait(list(self._senders.values()))

    async def stop(self) -> None:
        """No more patches (leadership lost, the pool gone): what waits is dropped."""
        self._pending.clear()
        senders, self._senders = list(self._senders.values()), {}
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

    async def _send(self, key: Key) -> None:
        """Send `key`'s newest patch until none waits."""
        try:
            while (pending := self._pending.pop(key, None)) is not None:
                what, send, done = pending
                self._sending[key] = what
                try:
                    patched = await send()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one patch's failure is not the pool's: a later round tries again
                    self._failed(key, exc)
                    done(False)
                    continue
                finally:
                    self._sending.pop(key, None)
                if patched is not None:
                    self.state.patched(patched)
                done(patched is not None)  # None: the pod is gone, or the patch was no longer wanted
        finally:
            if self._senders.get(key) is asyncio.current_task():
                del self._senders[key]

    def _failed(self, key: Key, exc: Exception) -> None:
        why, _ = count_write_failure(self.namespace, self.name, exc, "patch")
        log.warning("%s/%s: %s of pod %s failed (%s); a later round tries again", self.namespace, self.name, *key, why)
