"""The worker protocols (DESIGN §6): one module per wire, each owning everything
that differs between them: key and channel names, parsing registrations,
heartbeats and events into the one `WorkerReport`, encoding commands, the env
and defaults of worker pods, the fresh window, and whether the worker has a
retire handshake. Pure: no I/O here; the Redis hub and the pod renderer call in.

`seed` (the default) is the project's reference worker; `bifrost` the worker
the Bifrost platform ships. Nothing outside these modules (and the reference
worker, which *is* the seed's wire) names a seed or Bifrost key.
"""

from __future__ import annotations

from .base import Heard, Heartbeat, Ignored, Offline, RetireHandshake, WorkerProtocol
from .bifrost import BIFROST
from .seed import SEED

PROTOCOLS: dict[str, WorkerProtocol] = {SEED.name: SEED, BIFROST.name: BIFROST}


def protocol_for(name: str) -> WorkerProtocol:
    """The protocol a pool's `spec.protocol` names (the CRD admits only these names)."""
    return PROTOCOLS[name]


__all__ = [
    "BIFROST",
    "PROTOCOLS",
    "SEED",
    "Heard",
    "Heartbeat",
    "Ignored",
    "Offline",
    "RetireHandshake",
    "WorkerProtocol",
    "protocol_for",
]
