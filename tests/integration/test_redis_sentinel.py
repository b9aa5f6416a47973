"""Redis as production runs it, against real servers: a primary, a replica and three
Sentinels, with TLS from the test bed's CA and the contract's ACL users (never the
default user). The operator's hub and the reference worker follow a `kill -9` of
the primary; scripts re-load on the promoted replica; a wrong CA or a missing
permission is a typed fault that names what is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from devcluster.certs import RedisTls, make_redis_tls
from devcluster.client import Client
from devcluster.sentinel_set import SentinelSet
from devcluster.waiting import async_wait_until, wait_until
from tests.integration.test_redis_hub import Recorder, write
from tests.integration.workers import WorkerProcess
from workerpool.contracts.names import DEFAULT_QUEUE_KEY
from workerpool.contracts.redis_acl import OPERATOR, WORKER
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.controller.ports import Subscriber
from workerpool.protocols import SEED
from workerpool.redis_connect import Identity, Problem, RedisAccess

pytestmark = pytest.mark.redis

BURST = 24
FOLLOW = 30.0  # s: a failover (Sentinel: 2 s down-after) and the clients following it


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> RedisTls:
    return make_redis_tls(tmp_path_factory.mktemp("tls"), ("127.0.0.1",))


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory, tls: RedisTls) -> Iterator[SentinelSet]:
    """One set for the module (about 7 s to start): a test that fails the primary over brings
    the killed node back as a replica before it ends, so each test starts from a full set."""
    s = SentinelSet(tmp_path_factory.mktemp("sentinel"), tls=tls, acl=True).start()
    try:
        yield s
    finally:
        s.stop()


def access(s: SentinelSet, user: str, tls: RedisTls) -> RedisAccess:
    return RedisAccess(s.url(user), tls.ca.read_text())


@pytest.fixture
async def hub(sentinels: SentinelSet, tls: RedisTls) -> AsyncIterator[RedisHub]:
    h = RedisHub(access(sentinels, OPERATOR.user, tls), SEED, resync_seconds=3600, queue_poll_seconds=0.05)
    try:
        yield h
    finally:
        await h.stop()


def subscriber(recorder: Recorder) -> Subscriber:
    """A pool on the default queue key (the one the ACL's key patterns name)."""
    return Subscriber("ns", recorder.pool, DEFAULT_QUEUE_KEY, 0.5, recorder)


def our_clients(node_client: redis.Redis) -> list[str]:
    """The names of the product's connections to one server (CLIENT SETNAME in redis_connect)."""
    return [c["name"] for c in node_client.client_list() if c.get("name", "").startswith("workerpool-")]


def test_workers_follow_a_failover_and_every_execution_ends_with_a_result(
    sentinels: SentinelSet, tls: RedisTls, tmp_path: Path
) -> None:
    # Leases longer than a failover, as in production (the default: 30 s); heartbeats often.
    env = {"REDIS_TLS_CA_FILE": str(tls.ca), "REGISTRATION_TTL_SECONDS": "15"}
    workers = [WorkerProcess(sentinels.url(WORKER.user), tmp_path, **env).start() for _ in range(2)]
    client = Client(sentinels.master_client(), durable=True)
    try:
        ids = [client.submit("sleep", {"seconds": 0.4}) for _ in range(BURST)]
        wait_until(lambda: sum(1 for e in ids if client.result(e)) >= 4, timeout=30, what="the burst to be under way")
        old = sentinels.kill_primary()
        sentinels.wait_promoted(old, timeout=FOLLOW)
        results = {e: client.wait_result(e, timeout=FOLLOW + 30) for e in ids}
        assert all(r.success for r in results.values()), [r for r in results.values() if not r.success]
        # At-least-once: a claim the old primary took to its grave runs again. Counted, never hidden.
        runs = wait_until(
            lambda: n if (n := client.runs([w.worker_id for w in workers])) >= BURST else None,
            timeout=10,
            what="the workers' counters to report every run",
        )
        print(f"\n{BURST} executions, {runs} runs ({runs - BURST} re-runs from at-least-once delivery)")

        # The old primary comes back (empty, as a primary, until Sentinel demotes it): nothing is
        # written to it, and none of our connections go to it, while the workers heartbeat on.
        sentinels.rejoin(old)
        at_rejoin = {w.worker_id: client.registration(w.worker_id) for w in workers}
        for w in workers:
            before = at_rejoin[w.worker_id]
            assert before is not None and before.heartbeat_at is not None
            client.wait_registration(
                w.worker_id,
                lambda reg, t=before.heartbeat_at: reg.heartbeat_at is not None and reg.heartbeat_at > t,
                what="a heartbeat after the old primary rejoined",
            )
        stale = sentinels.node_client(old)
        assert our_clients(stale) == [], "a client of ours connected to the demoted primary"
        assert "errorstat_READONLY" not in stale.info("errorstats"), "a write reached the demoted primary"
        assert stale.dbsize() == client.r.dbsize() or stale.info("replication")["role"] == "slave"
    finally:
        for w in workers:
            w.stop()
    logs = "".join(w.logs() for w in workers)
    assert "Traceback" not in logs
    assert sentinels.passwords[WORKER.user] not in logs


async def test_the_hub_reports_a_failover_and_trusts_again_only_after_a_full_resync(
    hub: RedisHub, sentinels: SentinelSet
) -> None:
    admin = sentinels.master_client()
    recorder = Recorder()
    write(admin, "w-1", publish=True)
    hub.subscribe(subscriber(recorder))
    hub.start()
    await async_wait_until(lambda: recorder.resyncs and hub.fault is None, within=20, what="a first resync")
    # A script loaded on the primary; the replica that will be promoted has never seen it.
    published = await hub.commands.publish_once("bifrost:operator:recycle:u:1", "{}", [], 60)
    assert published.outcome == "published"

    old = sentinels.kill_primary()
    await async_wait_until(
        lambda: hub.worker_fault is not None and hub.worker_fault.problem is Problem.FAILOVER,
        within=FOLLOW,
        what="the hub to report the failover",
    )
    assert hub.worker_fault is not None and "Sentinel failover" in hub.worker_fault.message
    new, _ = await asyncio.to_thread(sentinels.wait_promoted, old, FOLLOW)
    resyncs_before = len(recorder.resyncs)
    write(admin, "w-1", publish=True)  # the worker heartbeats on the new primary
    await async_wait_until(lambda: hub.fault is None, within=FOLLOW, what="the hub to trust Redis again")
    assert len(recorder.resyncs) > resyncs_before, "the fault cleared before a resync re-read the workers"
    assert "w-1" in recorder.resyncs[-1][0]

    # NOSCRIPT on the promoted replica: the script re-loads itself; the dedupe record holds across.
    promoted = sentinels.node_client(new)
    published = await hub.commands.publish_once("bifrost:operator:recycle:u:2", "{}", [], 60)
    assert published.outcome == "published" and promoted.exists("bifrost:operator:recycle:u:2")
    again = await hub.commands.publish_once("bifrost:operator:recycle:u:1", "{}", [], 60)
    assert again.outcome == "handled_before", "the record written (and acknowledged) before the failover was lost"
    assert our_clients(sentinels.node_client(new)), "the hub should be connected to the new primary"
    await asyncio.to_thread(sentinels.rejoin, old, FOLLOW, new)


async def test_a_certificate_that_does_not_verify_is_a_tls_fault_never_plaintext(
    sentinels: SentinelSet, tls: RedisTls, tmp_path: Path
) -> None:
    wrong = make_redis_tls(tmp_path / "wrong", ("127.0.0.1",), name="some-other-ca")
    hubs = [
        RedisHub(RedisAccess(sentinels.url(OPERATOR.user), wrong.ca.read_text()), SEED, 3600, 0.05),
        # rediss:// to one server: the same check.
        RedisHub(
            RedisAccess(
                f"rediss://{OPERATOR.user}:{sentinels.passwords[OPERATOR.user]}@127.0.0.1:{sentinels.primary().port}/0",
                wrong.ca.read_text(),
            ),
            SEED,
            3600,
            0.05,
        ),
    ]
    try:
        for h in hubs:
            h.start()
        for h in hubs:
            await async_wait_until(lambda h=h: h.fault, within=20, what="a TLS fault")  # type: ignore[misc]
            assert h.fault is not None and h.fault.problem is Problem.TLS, h.fault
            assert "certificate verify failed" in h.fault.message.lower()
            assert sentinels.passwords[OPERATOR.user] not in h.fault.message
    finally:
        for h in hubs:
            await h.stop()


async def test_a_missing_permission_is_a_fault_that_names_the_command(sentinels: SentinelSet, tls: RedisTls) -> None:
    # The operator's rules minus one command: the queue reading needs it.
    sentinels.add_user("op-limited", "limited-pw", f"{OPERATOR.rules()} -zcard")
    identity = Identity("op-limited", "limited-pw", frozenset({sentinels.host}))
    h = RedisHub(access(sentinels, OPERATOR.user, tls), SEED, 3600, 0.05, identity=identity)
    recorder = Recorder()
    h.subscribe(subscriber(recorder))
    try:
        h.start()
        await async_wait_until(lambda: h.fault, within=20, what="a permission fault")
        assert h.fault is not None and h.fault.problem is Problem.PERMISSION
        assert "'zcard'" in h.fault.message
    finally:
        await h.stop()
