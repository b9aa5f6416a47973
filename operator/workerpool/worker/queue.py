"""The execution queue on Redis: enqueue, claim with a lease, finish, re-queue.

Keys (the first two are the contract, DESIGN §3; the rest are this runtime's):

- `{queue}`            sorted set of pending execution ids, score = enqueue time (s)
- `bifrost:exec:{id}:context` / `:result`
- `{queue}:leases`     sorted set: claimed execution id -> lease expiry (ms)
- `{queue}:lease-info` hash: id -> {"worker_id", "score", "attempts"}
- `{queue}:notify`     list of wake-up tokens (one per enqueue) that idle
                       workers block on, so dispatch is event-driven
- `{queue}:held:{worker}` set of the ids a worker holds a lease on
- `worker:{id}:retiring` set by the operator before deleting an idle worker's
                       pod; a claim by that worker returns nothing while it exists

Guarantees (documented in docs/worker.md):
- claiming is one Lua script: the id leaves the pending set and gets a lease
  atomically, so a worker dying at any instant cannot drop it;
- finishing writes the result, publishes it and drops the lease atomically;
- a lease not renewed (by heartbeats) before it expires is re-queued with its
  original score by any live worker; after `max_attempts` claims the
  execution gets a failure result instead of running again.
Execution is therefore at-least-once: an execution re-queued because its
worker was lost may run again from the start.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from ..contracts.names import (
    RESULTS_CHANNEL,
    exec_context_key,
    exec_result_key,
    held_key,
    worker_retiring_key,
)
from ..contracts.wire import ExecutionResult, to_wire
from ..redis_connect import ReplicaAck

_CLAIM = """
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
local id, score = popped[1], popped[2]
local attempts = 1
local info = redis.call('HGET', KEYS[3], id)
if info then attempts = cjson.decode(info)['attempts'] + 1 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), id)
redis.call('HSET', KEYS[3], id, cjson.encode({worker_id=ARGV[1], score=score, attempts=attempts}))
redis.call('SADD', KEYS[5], id)
local ctx = redis.call('GET', ARGV[4] .. id .. ARGV[5])
return {id, ctx, attempts, score}
"""

_FINISH = """
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
local info = redis.call('HGET', KEYS[3], ARGV[1])
if info then redis.call('SREM', ARGV[5] .. cjson.decode(info)['worker_id'], ARGV[1]) end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
"""

# Mode "expired": leases past ARGV[1]; mode "owner": every lease of worker ARGV[3]
# (a restarted worker's previous incarnation cannot still be running them).
_REQUEUE = """
local ids
if ARGV[2] == 'owner' then ids = redis.call('ZRANGE', KEYS[2], 0, -1)
else ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000) end
local moved = {}
for _, id in ipairs(ids) do
  local info = redis.call('HGET', KEYS[3], id)
  local decoded = nil
  if info then decoded = cjson.decode(info) end
  if ARGV[2] ~= 'owner' or (decoded and decoded['worker_id'] == ARGV[3]) then
    redis.call('ZREM', KEYS[2], id)
    local score = ARGV[4]
    if decoded then
      score = decoded['score']
      redis.call('SREM', ARGV[5] .. decoded['worker_id'], id)
    end
    redis.call('ZADD', KEYS[1], score, id)
    redis.call('LPUSH', KEYS[4], '1')
    table.insert(moved, id)
  end
end
return moved
"""

# A claimed execution this worker cannot start after all (no process: it is stopping,
# or a process died since it checked capacity): back to the queue at its old place,
# its attempt not counted (no worker was lost). ARGV[1] = execution id.
_RELEASE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local score = ARGV[2]
local info = redis.call('HGET', KEYS[3], ARGV[1])
if info then
  local decoded = cjson.decode(info)
  score = decoded['score']
  redis.call('SREM', ARGV[3] .. decoded['worker_id'], ARGV[1])
  decoded['attempts'] = decoded['attempts'] - 1
  redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(decoded))
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
return 1
"""

NOTIFY_CAP = 10000  # wake-up tokens kept at most (they are only hints)


@dataclass(frozen=True)
class Claimed:
    execution_id: str
    context: str | None  # raw JSON, None when the context key is missing
    attempts: int
    enqueued_at: float | None = None  # its score: when it was enqueued (epoch seconds)


class Queue:
    """One Redis client per worker; blocking waits use a connection of their own.

    `durable` (the Redis has replicas: a Sentinel URL): an enqueue and a result
    count as written once one replica holds them too (WAIT), so a failover right
    after cannot lose them; a failover before that is an error the caller retries.
    """

    def __init__(self, client: aioredis.Redis, queue_key: str, durable: bool = False) -> None:
        self.r = client
        self.replicated = ReplicaAck(client, durable)
        self.key = queue_key
        self.leases = f"{queue_key}:leases"
        self.lease_info = f"{queue_key}:lease-info"
        self.notify = f"{queue_key}:notify"
        self.held_prefix = held_key(queue_key, "")
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._requeue = client.register_script(_REQUEUE)
        self._release = client.register_script(_RELEASE)

    async def enqueue(self, execution_id: str, context: dict[str, Any], *, at: float | None = None) -> None:
        score = time.time() if at is None else at
        async with self.r.pipeline(transaction=True) as p:
            p.set(exec_context_key(execution_id), json.dumps(context))
            p.zadd(self.key, {execution_id: score})
            p.lpush(self.notify, "1")
            p.ltrim(self.notify, 0, NOTIFY_CAP - 1)
            await p.execute()
        await self.replicated()

    async def claim(self, worker_id: str, lease_seconds: float) -> Claimed | None:
        now_ms = int(time.time() * 1000)
        prefix, suffix = exec_context_key("\0").split("\0")
        res = await self._claim(
            keys=[
                self.key,
                self.leases,
                self.lease_info,
                worker_retiring_key(worker_id),
                held_key(self.key, worker_id),
            ],
            args=[worker_id, now_ms, int(lease_seconds * 1000), prefix, suffix],
        )
        if not res:
            return None
        ident, ctx, attempts, score = cast(list[Any], res)
        return Claimed(_s(ident), _s(ctx) if ctx is not None else None, int(attempts), _float(score))

    async def wait_for_work(self, blocking: aioredis.Redis, block_seconds: float) -> None:
        """Block until an enqueue's wake-up token arrives or `block_seconds` pass.

        Tokens are hints, not work items: the caller claims afterwards, and
        producers that only ZADD (without a token) are found by the next
        claim after the timeout.
        """
        await blocking.blpop([self.notify], timeout=block_seconds)

    async def finish(self, result: ExecutionResult, ttl_seconds: int) -> None:
        """Write the result (with replicas, then wait for one: ReplicaAck logs a miss)."""
        payload = json.dumps(to_wire(result))
        await self._finish(
            keys=[self.key, self.leases, self.lease_info, exec_result_key(result.execution_id)],
            args=[result.execution_id, payload, ttl_seconds, RESULTS_CHANNEL, self.held_prefix],
        )
        await self.replicated()

    async def renew(self, execution_ids: list[str], lease_seconds: float) -> None:
        if not execution_ids:
            return
        expiry = int((time.time() + lease_seconds) * 1000)
        # XX: a lease that was already re-queued is not resurrected.
        await self.r.zadd(self.leases, dict.fromkeys(execution_ids, expiry), xx=True)

    async def requeue_expired(self) -> list[str]:
        return await self._run_requeue("expired", "")

    async def requeue_owned_by(self, worker_id: str) -> list[str]:
        return await self._run_requeue("owner", worker_id)

    async def release(self, execution_id: str) -> bool:
        """Give a claimed execution back (not started here); False if its lease was already gone."""
        res = await self._release(
            keys=[self.key, self.leases, self.lease_info, self.notify],
            args=[execution_id, time.time(), self.held_prefix],
        )
        return bool(int(res))

    async def _run_requeue(self, mode: str, worker_id: str) -> list[str]:
        now = time.time()
        res = await self._requeue(
            keys=[self.key, self.leases, self.lease_info, self.notify],
            args=[int(now * 1000), mode, worker_id, now, self.held_prefix],
        )
        return [_s(x) for x in cast(list[Any], res or [])]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    """A Lua reply's number (Redis returns the score as a string); None if it is not one."""
    try:
        return float(_s(value))
    except (TypeError, ValueError):
        return None
