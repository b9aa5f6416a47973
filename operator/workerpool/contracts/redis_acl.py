"""The least-privilege Redis ACL users of the operator and of the reference worker (DESIGN §3).

Declared once, here: docs/redis.md prints these rules (a unit test keeps them the
same), and the test bed creates its ACL users from them, so the e2e suite proves
the product works under exactly these permissions. Commands run inside our Lua
scripts are checked against the caller's ACL too, so they are listed.

The key patterns are for the default queue key (`bifrost:queue:pending`); a pool
with another `spec.redis.queueKey` needs the same patterns with its key.
"""

from __future__ import annotations

from dataclasses import dataclass

from .names import DEFAULT_QUEUE_KEY, HEARTBEAT_CHANNEL, RESULTS_CHANNEL

# On every connection: redis-py names the client; health checks PING. (redis-py also sends
# CLIENT SETINFO, new in Redis 7.2, and ignores its refusal: it is left out so the rules load on 7.0.)
CONNECTION = ("ping", "client|setname")
# Lua scripts, and their re-load on NOSCRIPT (a promoted replica has an empty script cache).
SCRIPTS = ("evalsha", "eval", "script|load")


@dataclass(frozen=True)
class AclRole:
    """One ACL user: the commands it may run, the keys (`%R~`: read only) and the channels."""

    user: str
    purpose: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]
    channels: tuple[str, ...]

    def rules(self) -> str:
        """The ACL SETUSER rules (without `on` and the password): reset, then exactly these."""
        return " ".join(
            ["resetkeys", "resetchannels", "-@all"]
            + [f"+{c}" for c in self.commands]
            + list(self.keys)
            + [f"&{c}" for c in self.channels]
        )


OPERATOR = AclRole(
    user="workerpool-operator",
    purpose="the operator: reads registrations and the queue, retires workers, publishes recycles once",
    commands=(
        *CONNECTION,
        *SCRIPTS,
        "subscribe",  # the heartbeat channel
        "scan",  # the resync's registration scan
        "hgetall",  # a registration
        "zcard",  # the queue's depth
        "zrange",  # the queue's oldest entry
        "del",  # undoing a retire mark
        "wait",  # durable writes with replicas (Sentinel)
        # inside the retire and publish-once scripts:
        "set",
        "get",
        "scard",
        "smembers",
        "pubsub|numsub",  # a recycle is sent only to workers subscribed at that instant
        "publish",
    ),
    keys=(
        "%R~worker:*",  # registrations
        "~worker:*:retiring",  # retire marks
        f"%R~{DEFAULT_QUEUE_KEY}",  # the queue
        f"%R~{DEFAULT_QUEUE_KEY}:held:*",  # what each worker holds
        "~bifrost:operator:recycle:*",  # the recycle dedupe records
    ),
    channels=(HEARTBEAT_CHANNEL, "worker:*:commands"),
)

WORKER = AclRole(
    user="workerpool-worker",
    purpose="the reference worker: claims, leases, results, heartbeats, commands",
    commands=(
        *CONNECTION,
        *SCRIPTS,
        "subscribe",  # its command channel
        "multi",  # the heartbeat: registration + TTL + publish in one transaction
        "exec",
        "hset",
        "expire",
        "publish",
        "del",  # unregistering on a clean stop
        "zadd",  # lease renewal
        "blpop",  # waiting for work
        "wait",  # durable results with replicas (Sentinel)
        # inside the claim, finish, re-queue and release scripts:
        "exists",
        "zpopmin",
        "zrem",
        "zrange",
        "zrangebyscore",
        "hget",
        "hdel",
        "sadd",
        "srem",
        "get",
        "set",
        "lpush",
    ),
    keys=(
        "~worker:*",  # its registration (and the operator's retire mark, read in the claim script)
        f"~{DEFAULT_QUEUE_KEY}",
        f"~{DEFAULT_QUEUE_KEY}:*",  # leases, lease info, wake-up list, held sets
        "~bifrost:exec:*",  # contexts (read) and results (written)
    ),
    channels=(HEARTBEAT_CHANNEL, "worker:*:commands", RESULTS_CHANNEL),
)

# What Sentinel asks of the clients above when they connect to it (the same user, DESIGN §3).
SENTINEL_CLIENT = ("ping", "client|setname", "sentinel|masters", "sentinel|slaves", "sentinel|replicas")

ROLES = (OPERATOR, WORKER)
