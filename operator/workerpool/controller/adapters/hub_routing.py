"""Which pools a worker's report goes to.

A report that names its pool (the seed's) goes to that pool, if the pool owns the
pod. One that does not (Bifrost's: its registration and heartbeat carry no pool)
is matched by pod name against every pool on the Redis: O(pools) per heartbeat,
so each worker's owners are remembered after the first match (`Routes`) and only
checked again (O(1)) on its later heartbeats. A worker no pool owns is not
remembered (its pod may be created a moment later) and costs a scan each time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING

from ...decide.pods import pod_name_prefix

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


class Subscriptions:
    """The pools listening to one hub, and which of them a worker's report goes to."""

    def __init__(self, server: Hashable, pod_names: SharedPodNames | None, resync: Callable[[], None]) -> None:
        self.server = server  # the hub's Redis server (`RedisUrl.server`)
        self.pod_names = pod_names  # the replica's index (None: reports name their pool)
        self.resync = resync  # asks the hub for a resync soon
        self.by_key: dict[Key, Subscriber] = {}
        self.new: set[Key] = set()  # subscribed since the last resync
        self._routes = Routes()

    def add(self, sub: Subscriber) -> None:
        """Subscribe (again on each of its rounds: the listener may be new). A new pool learns its
        workers at once (not after a period), and fully: the next resync re-reads its workers
        (not all: at 1000 pools that was 10,000 hashes)."""
        key = (sub.namespace, sub.name)
        if key not in self.by_key:
            self.new.add(key)
            self.resync()
            self._routes.clear()  # only for a new pool: routes name pools, not their listeners
        self.by_key[key] = sub
        if self.pod_names is not None:
            self.pod_names.join(key, self.server, sub.listener.on_health)

    def remove(self, namespace: str, name: str) -> None:
        self.by_key.pop((namespace, name), None)
        self._routes.clear()
        if self.pod_names is not None:
            self.pod_names.leave((namespace, name))

    def shared_with(self, namespace: str, name: str) -> tuple[Key, ...]:
        return self.pod_names.others((namespace, name)) if self.pod_names is not None else ()

    def take_new(self) -> set[Key]:
        new, self.new = self.new, set()
        return new

    def route(self, worker_id: str, pool: str | None, namespace: str | None) -> list[Subscriber]:
        return route(self.by_key, worker_id, pool, namespace, self._routes)


class SharedPodNames:
    """Pools whose workers are told apart by pod name alone (Bifrost's reports carry no pool),
    grouped by the Redis server they publish to and what their pods' names start with.

    Pub/sub channels are server-wide (any database, any user), so two such pools on one server
    whose pods are named alike (same-named pools in two namespaces; names the API server cuts
    to the same 58 characters) hear each other's heartbeats, and a pod's report may be another
    pod's. One index for the replica (the fleet's), across every hub of the server: a pool that
    joins or leaves wakes the others of its group, whose rounds then see it.
    """

    def __init__(self) -> None:
        self._group_of: dict[Key, tuple[Hashable, str]] = {}
        self._members: dict[tuple[Hashable, str], dict[Key, Callable[[], None]]] = {}

    def join(self, key: Key, server: Hashable, wake: Callable[[], None]) -> None:
        group = (server, pod_name_prefix(key[1]))
        if self._group_of.get(key) == group:
            self._members[group][key] = wake
            return
        self.leave(key)
        members = self._members.setdefault(group, {})
        for other in members.values():
            other()
        members[key] = wake
        self._group_of[key] = group

    def leave(self, key: Key) -> None:
        group = self._group_of.pop(key, None)
        if group is None:
            return
        members = self._members[group]
        del members[key]
        if not members:
            del self._members[group]
        for other in members.values():
            other()

    def others(self, key: Key) -> tuple[Key, ...]:
        """The pools whose workers may report under this pool's pods' names (sorted)."""
        group = self._group_of.get(key)
        if group is None:
            return ()
        return tuple(sorted(k for k in self._members[group] if k != key))
