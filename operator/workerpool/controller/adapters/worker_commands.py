"""Commands to workers through Redis, each one atomic in a Lua script: retiring a
worker before its pod is deleted (for a protocol with the retire handshake),
and publishing a recycle exactly once; and reading one worker's report now."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from ...contracts.report import WorkerReport
from ...protocols import RetireHandshake, WorkerProtocol
from ...redis_connect import ReplicaAck
from ..ports import PublishOnce
from ..process import metrics

# KEYS[1] = worker:{id}:retiring, KEYS[2] = {queue}:held:{id}; ARGV[1] = TTL s.
# After this returns 1 the worker holds no execution and can claim none (its claim
# script checks KEYS[1]): deleting its pod cannot interrupt an execution.
_RETIRE = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
if redis.call('SCARD', KEYS[2]) > 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
return 1
"""

# The same mark for an eviction, kept even while the worker is busy: it finishes
# what it holds and claims nothing new. Returns the ids it still holds.
_RETIRE_FOR_EVICTION = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return redis.call('SMEMBERS', KEYS[2])
"""

# KEYS[1] = dedupe key; ARGV[1] = record JSON, ARGV[2] = TTL s, ARGV[3..] = channel, message pairs.
# A worker hears its commands on a plain SUBSCRIBE (both protocols), and PUBLISH
# keeps nothing: a command sent while a worker is between subscriptions (after a
# Sentinel failover, Redis closes every client of the promoted replica) is lost.
# So the record is written, and anything published, only when every target
# channel has a subscriber at this instant (the script is atomic: none can leave
# in between); otherwise nothing is written and the caller tries again later.
# Returns {1, record} published, {0, stored record} handled before, {2, JSON
# list of the channels nobody listens on} not yet.
_PUBLISH_ONCE = """
local stored = redis.call('GET', KEYS[1])
if stored then return {0, stored} end
local deaf = {}
for i = 3, #ARGV, 2 do
  if redis.call('PUBSUB', 'NUMSUB', ARGV[i])[2] == 0 then deaf[#deaf + 1] = ARGV[i] end
end
if #deaf > 0 then return {2, cjson.encode(deaf)} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return {1, ARGV[1]}
"""


class NoHandshake(RuntimeError):
    """A retire was asked of a protocol whose worker has no retire handshake (a bug of the caller)."""


class WorkerCommands:
    """`durable`: the Redis has replicas (a Sentinel URL): the writes a promise rests on (the
    recycle dedupe record, a retire mark) wait for one replica to hold them, so a failover right
    after cannot lose them. A write no replica acknowledged in time is counted and logged, not
    failed: the primary holds it, and failing would only retry what already happened."""

    def __init__(self, client: aioredis.Redis, protocol: WorkerProtocol, durable: bool = False) -> None:
        self.client = client
        self.protocol = protocol
        self.replica_ack = ReplicaAck(client, durable)
        self._publish_once = client.register_script(_PUBLISH_ONCE)
        self._retire = client.register_script(_RETIRE)
        self._retire_for_eviction = client.register_script(_RETIRE_FOR_EVICTION)

    @property
    def has_handshake(self) -> bool:
        return self.protocol.has_retire_handshake

    def _handshake(self, worker_id: str, queue_key: str) -> RetireHandshake:
        keys = self.protocol.handshake(worker_id, queue_key)
        if keys is None:
            raise NoHandshake(f"protocol {self.protocol.name} has no retire handshake")
        return keys

    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool:
        """Stop a worker from claiming; True if it holds no execution (its pod may go)."""
        keys = self._handshake(worker_id, queue_key)
        res = await self._retire(keys=[keys.retiring_key, keys.held_key], args=[ttl_seconds])
        await self._replicated("retire")
        return bool(int(res))

    async def retire_for_eviction(self, worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]:
        """Stop a worker from claiming (for `ttl_seconds`, even if busy); the executions it still holds."""
        keys = self._handshake(worker_id, queue_key)
        held = await self._retire_for_eviction(keys=[keys.retiring_key, keys.held_key], args=[ttl_seconds])
        await self._replicated("retire")
        return sorted(h.decode() if isinstance(h, bytes) else str(h) for h in held or ())

    async def report(self, worker_id: str) -> WorkerReport | None:
        """The worker's report as Redis holds it now (None: no such worker); raises WireFormatError."""
        async with self.client.pipeline(transaction=False) as p:
            for command, key in self.protocol.worker_reads(worker_id):
                getattr(p, command)(key)
            replies = await p.execute()
        return self.protocol.parse_reads(worker_id, replies)

    async def unretire(self, worker_id: str, queue_key: str) -> None:
        """Undo `retire` for a worker whose pod was not deleted after all."""
        await self.client.delete(self._handshake(worker_id, queue_key).retiring_key)

    async def publish_once(
        self, dedupe_key: str, record: str, messages: list[tuple[str, str]], ttl_seconds: int
    ) -> PublishOnce:
        """Publish every (channel, message) unless `dedupe_key` exists, and only when every
        channel has a subscriber; what came of it, with the stored record."""
        args: list[str | int] = [record, ttl_seconds]
        for channel, message in messages:
            args += [channel, message]
        res = await self._publish_once(keys=[dedupe_key], args=args)
        code, detail = int(res[0]), res[1].decode() if isinstance(res[1], bytes) else str(res[1])
        if code == 2:
            return PublishOnce("not_listening", record, not_listening=tuple(_channels(detail)))
        if code == 1:
            await self._replicated("recycle")
            return PublishOnce("published", detail)
        return PublishOnce("handled_before", detail)

    async def _replicated(self, write: str) -> None:
        """Wait for one replica to hold the writes made so far on this connection pool's primary."""
        if not await self.replica_ack():  # logged by ReplicaAck, once per miss
            metrics.UNREPLICATED_WRITES.labels(write=write).inc()


def _channels(detail: str) -> list[str]:
    """The script's list of channels nobody listens on (cjson encodes an empty table as {})."""
    try:
        value = json.loads(detail)
    except ValueError:
        return []
    return [str(c) for c in value] if isinstance(value, list) else []
