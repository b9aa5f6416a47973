"""Routing a report that names no pool (Bifrost's): one scan of the pools per worker, then O(1)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from workerpool.controller.adapters.hub_routing import Routes, SharedPodNames, route
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.controller.ports import Subscriber
from workerpool.decide.pods import pod_name_prefix
from workerpool.protocols import WorkerProtocol
from workerpool.protocols.bifrost import BIFROST
from workerpool.protocols.seed import SEED
from workerpool.redis_connect import RedisAccess


class Pods:
    """A pool's listener that counts how often it is asked whether it owns a worker."""

    def __init__(self, *pods: str) -> None:
        self.pods, self.asked = set(pods), 0

    def owns(self, worker_id: str) -> bool:
        self.asked += 1
        return worker_id in self.pods

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"routing called {name}")


def pools(n: int) -> dict[tuple[str, str], Subscriber]:
    return {("ns", f"p{i}"): Subscriber("ns", f"p{i}", None, 10.0, Pods(f"p{i}-pod")) for i in range(n)}  # type: ignore[arg-type]


def asked(subs: dict[tuple[str, str], Subscriber]) -> int:
    return sum(s.listener.asked for s in subs.values())  # type: ignore[attr-defined]


def test_a_workers_owner_is_found_once_then_only_checked() -> None:
    subs, routes = pools(1000), Routes()
    assert [s.name for s in route(subs, "p500-pod", None, None, routes)] == ["p500"]
    first = asked(subs)
    assert first == 1000
    for _ in range(100):
        assert [s.name for s in route(subs, "p500-pod", None, None, routes)] == ["p500"]
    assert asked(subs) == first + 100  # one check per heartbeat, not a scan


def test_a_pod_that_moved_or_a_pool_that_left_is_found_again() -> None:
    subs, routes = pools(3), Routes()
    route(subs, "p1-pod", None, None, routes)
    subs[("ns", "p1")].listener.pods.clear()  # type: ignore[attr-defined]
    subs[("ns", "p2")].listener.pods.add("p1-pod")  # type: ignore[attr-defined]
    assert [s.name for s in route(subs, "p1-pod", None, None, routes)] == ["p2"]
    del subs[("ns", "p2")]
    routes.clear()  # as the hub does on unsubscribe
    assert route(subs, "p1-pod", None, None, routes) == []


def test_an_unowned_worker_is_not_remembered() -> None:
    subs, routes = pools(3), Routes()
    assert route(subs, "stranger", None, None, routes) == []
    subs[("ns", "p0")].listener.pods.add("stranger")  # its pod appears a moment later
    assert [s.name for s in route(subs, "stranger", None, None, routes)] == ["p0"]


# --- pools whose workers may report under each other's pods' names ---------------------------------

NAMES = st.sampled_from(["w", "x", "a" * 57 + "b", "a" * 57 + "c", "a" * 60, "a" * 61 + "-z"])
SERVERS = st.sampled_from(["redis-a:6379", "redis-b:6379"])
STEPS = st.lists(st.tuples(st.booleans(), st.sampled_from(["team-a", "team-b", "team-c"]), NAMES, SERVERS))


@given(STEPS)
def test_pools_share_pod_names_exactly_when_their_server_and_generated_prefix_agree(
    steps: list[tuple[bool, str, str, str]],
) -> None:
    """Against the rule itself: the API server keeps 58 characters of `name-` and adds 5 random
    ones, so two pools on one server name pods alike iff their cut prefixes agree. And a pool that
    joins or leaves wakes exactly the others of its group."""
    index, where, woken = SharedPodNames(), {}, []
    for joins, namespace, name, server in steps:
        key = (namespace, name)
        before = {k: index.others(k) for k in where}
        if joins:
            index.join(key, server, lambda k=key: woken.append(k))  # type: ignore[misc]
            where[key] = server
        else:
            index.leave(key)
            where.pop(key, None)
        for k, s in where.items():
            expected = sorted(
                o for o, t in where.items() if o != k and t == s and (o[1] + "-")[:58] == (k[1] + "-")[:58]
            )
            assert list(index.others(k)) == expected
        changed = {k for k in where if k != key and before.get(k, ()) != index.others(k)}
        assert changed <= set(woken)
        woken.clear()


def test_the_generated_prefix_is_what_the_api_server_keeps() -> None:
    assert pod_name_prefix("w") == "w-"
    assert pod_name_prefix("a" * 60) == "a" * 58
    assert pod_name_prefix("a" * 57 + "b") == "a" * 57 + "b"
    assert pod_name_prefix("a" * 57) == "a" * 57 + "-"


class Woken:
    def __init__(self) -> None:
        self.count = 0

    def on_health(self) -> None:
        self.count += 1

    def owns(self, worker_id: str) -> bool:
        return False


async def test_hubs_of_one_server_share_the_index_and_only_workers_without_a_pool_name_are_indexed() -> None:
    """Two URLs of one server (databases 0 and 1: pub/sub ignores the database) are two hubs; a
    same-named pool on each is found by both. The seed's reports name their pool: never indexed."""
    names = SharedPodNames()

    def hub(url: str, protocol: WorkerProtocol) -> RedisHub:
        return RedisHub(RedisAccess(url), protocol, 1.0, 1.0, pod_names=names)

    db0, db1 = hub("redis://r:6379/0", BIFROST), hub("redis://u:secret@r:6379/1", BIFROST)
    elsewhere, seed = hub("redis://other:6379/0", BIFROST), hub("redis://r:6379/0", SEED)
    a, b = Woken(), Woken()
    db0.subscribe(Subscriber("team-a", "w", None, 5.0, a))  # type: ignore[arg-type]
    db1.subscribe(Subscriber("team-b", "w", None, 5.0, b))  # type: ignore[arg-type]
    elsewhere.subscribe(Subscriber("team-c", "w", None, 5.0, Woken()))  # type: ignore[arg-type]
    seed.subscribe(Subscriber("team-d", "w", None, 5.0, Woken()))  # type: ignore[arg-type]
    assert db0.names_shared_with("team-a", "w") == (("team-b", "w"),)
    assert db1.names_shared_with("team-b", "w") == (("team-a", "w"),)
    assert elsewhere.names_shared_with("team-c", "w") == () and seed.names_shared_with("team-d", "w") == ()
    assert a.count == 1  # woken when team-b joined
    db1.unsubscribe("team-b", "w")
    assert db0.names_shared_with("team-a", "w") == () and a.count == 2
    for h in (db0, db1, elsewhere, seed):
        await h.stop()
