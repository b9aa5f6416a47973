"""Commands to workers through Redis, each one atomic in a Lua script: retiring a
worker before its pod is deleted, and publishing a recycle exactly once."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from ..contracts.names import held_key, worker_commands_channel, worker_key, worker_retiring_key
from ..contracts.wire import RecycleCommand, WorkerInfo, parse_registration, to_wire

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
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  for i = 3, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
  return {1, ARGV[1]}
end
return {0, redis.call('GET', KEYS[1])}
"""


class WorkerCommands:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._publish_once = client.register_script(_PUBLISH_ONCE)
        self._retire = client.register_script(_RETIRE)
        self._retire_for_eviction = client.register_script(_RETIRE_FOR_EVICTION)

    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool:
        """Stop a worker from claiming; True if it holds no execution (its pod may go)."""
        res = await self._retire(
            keys=[worker_retiring_key(worker_id), held_key(queue_key, worker_id)], args=[ttl_seconds]
        )
        return bool(int(res))

    async def retire_for_eviction(self, worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]:
        """Stop a worker from claiming (for `ttl_seconds`, even if busy); the executions it still holds."""
        held = await self._retire_for_eviction(
            keys=[worker_retiring_key(worker_id), held_key(queue_key, worker_id)], args=[ttl_seconds]
        )
        return sorted(h.decode() if isinstance(h, bytes) else str(h) for h in held or ())

    async def report(self, worker_id: str) -> WorkerInfo | None:
        """The worker's registration as it reads now (None: not registered); raises WireFormatError."""
        fields = await self.client.hgetall(worker_key(worker_id))
        return parse_registration(worker_id, fields).info if fields else None

    async def unretire(self, worker_id: str) -> None:
        """Undo `retire` for a worker whose pod was not deleted after all."""
        await self.client.delete(worker_retiring_key(worker_id))

    async def publish_once(
        self, dedupe_key: str, record: str, commands: list[tuple[str, int | None]], ttl_seconds: int
    ) -> tuple[bool, str]:
        """Publish every command unless `dedupe_key` exists; (published?, the stored record)."""
        args: list[str | int] = [record, ttl_seconds]
        for worker_id, pid in commands:
            args += [
                worker_commands_channel(worker_id),
                json.dumps(to_wire(RecycleCommand(type="recycle", pid=pid))),
            ]
        res = await self._publish_once(keys=[dedupe_key], args=args)
        published, stored = int(res[0]), res[1]
        return bool(published), stored.decode() if isinstance(stored, bytes) else str(stored)
