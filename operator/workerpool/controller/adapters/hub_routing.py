"""Which pools a worker's report goes to.

A report that names its pool (the seed's) goes to that pool, if the pool owns the
pod. One that does not (Bifrost's: its registration and heartbeat carry no pool)
is matched by pod name against every pool on the Redis: O(pools) per heartbeat,
so each worker's owners are remembered after the first match (`Routes`) and only
checked again (O(1)) on its later heartbeats. A worker no pool owns is not
remembered (its pod may be created a moment later) and costs a scan each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ports import Subscriber

Key = tuple[str, str]  # (namespace, pool)
MAX_ROUTES = 20_000  # remembered workers; past it the memory starts over (a scan each, once)


class Routes:
    def __init__(self) -> None:
        self._owners: dict[str, tuple[Key, ...]] = {}

    def clear(self) -> None:
        """A pool subscribed or left: what was matched may have changed."""
        self._owners.clear()

    def owners(self, subscribers: Mapping[Key, Subscriber], worker_id: str) -> list[Subscriber]:
        """The pools whose pods include `worker_id`, by pod name."""
        keys = self._owners.get(worker_id)
        if keys is not None:
            subs = [subscribers.get(k) for k in keys]
            if all(s is not None and s.listener.owns(worker_id) for s in subs):
                return subs  # type: ignore[return-value]
        found = [s for s in subscribers.values() if s.listener.owns(worker_id)]
        if found:
            if len(self._owners) >= MAX_ROUTES:
                self._owners.clear()
            self._owners[worker_id] = tuple((s.namespace, s.name) for s in found)
        else:
            self._owners.pop(worker_id, None)
        return found


def route(
    subscribers: Mapping[Key, Subscriber],
    worker_id: str,
    pool: str | None,
    namespace: str | None,
    routes: Routes | None = None,
) -> list[Subscriber]:
    """The pools a worker's report goes to: the one it names, if that pool owns its pod."""
    if pool is not None and namespace is not None:
        sub = subscribers.get((namespace, pool))
        return [sub] if sub is not None and sub.listener.owns(worker_id) else []
    # A worker that does not say which pool it is in: its pod name decides.
    if routes is not None:
        return routes.owners(subscribers, worker_id)
    return [s for s in subscribers.values() if s.listener.owns(worker_id)]
