"""Names fixed by the contract: API group, labels, annotations, Redis keys and channels."""

from typing import Final

# --- Kubernetes -----------------------------------------------------------
GROUP: Final = "bifrost.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "WorkerPool"
PLURAL: Final = "workerpools"
SINGULAR: Final = "workerpool"
SHORT_NAMES: Final = ("wp",)

POOL_LABEL: Final = f"{GROUP}/pool"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "workerpool-operator"
# Hash of the rendered pod template; a pod whose hash differs is outdated.
TEMPLATE_HASH_LABEL: Final = f"{GROUP}/template-hash"

RECYCLE_ANNOTATION: Final = f"{GROUP}/recycle"
# On a worker pod whose eviction the webhook holds (the time it last did): the
# acting replica counts the pod as leaving and replaces it if demand needs it.
EVICTING_ANNOTATION: Final = f"{GROUP}/evicting"
# When a pod's eviction was first held (set once): a hold ends at the pool's limit from it.
EVICTING_SINCE_ANNOTATION: Final = f"{GROUP}/evicting-since"
# A worker pod's readiness gate: the operator sets this pod condition once the pod's worker
# has registered, so the pod is Ready only when it is a worker (not when its container starts).
REGISTERED_CONDITION: Final = f"{GROUP}/worker-registered"
# On a WorkerPool whose workers kill what runs on SIGTERM: deleting the pool retires its
# workers first (idle ones at once, busy ones as they end, within a bound), then lets it go.
RETIRE_FINALIZER: Final = f"{GROUP}/retire-workers"
# Kopf's own bookkeeping gets a prefix of its own: a Kopf storage prefix is
# dropped from Kopf's diff-base, and our user-facing annotations must stay in it.
KOPF_PREFIX: Final = f"kopf.{GROUP}"
# Set on a worker pod while it runs an execution, removed once it is idle
# (decide/disruption.py): node autoscalers leave such a pod's node alone.
DO_NOT_DISRUPT_ANNOTATION: Final = "karpenter.sh/do-not-disrupt"
SAFE_TO_EVICT_ANNOTATION: Final = "cluster-autoscaler.kubernetes.io/safe-to-evict"
# The value each has while the pod is marked.
BUSY_MARKS: Final = ((DO_NOT_DISRUPT_ANNOTATION, "true"), (SAFE_TO_EVICT_ANNOTATION, "false"))

# --- Redis (DESIGN §3) ----------------------------------------------------
DEFAULT_QUEUE_KEY: Final = "bifrost:queue:pending"
HEARTBEAT_CHANNEL: Final = "bifrost:workers:heartbeat"
RESULTS_CHANNEL: Final = "bifrost:executions:results"
WORKER_KEY_PREFIX: Final = "worker:"
WORKER_KEY_PATTERN: Final = "worker:*"
DEFAULT_REGISTRATION_TTL_SECONDS: Final = 30


def worker_key(worker_id: str) -> str:
    """The registration hash of a worker."""
    return f"{WORKER_KEY_PREFIX}{worker_id}"


def worker_commands_channel(worker_id: str) -> str:
    """The pub/sub channel a worker listens on for commands."""
    return f"{WORKER_KEY_PREFIX}{worker_id}:commands"


def worker_id_from_key(key: str) -> str | None:
    """`worker:{id}` -> id; None for other keys (e.g. `worker:{id}:commands`-like keys)."""
    if not key.startswith(WORKER_KEY_PREFIX):
        return None
    rest = key[len(WORKER_KEY_PREFIX) :]
    if not rest or ":" in rest:
        return None
    return rest


def exec_context_key(execution_id: str) -> str:
    return f"bifrost:exec:{execution_id}:context"


def exec_result_key(execution_id: str) -> str:
    return f"bifrost:exec:{execution_id}:result"


def worker_retiring_key(worker_id: str) -> str:
    """Set by the operator before it deletes an idle worker's pod: the worker claims nothing more."""
    return f"{WORKER_KEY_PREFIX}{worker_id}:retiring"


def held_key(queue_key: str, worker_id: str) -> str:
    """The set of execution ids a worker holds a lease on (empty = it runs nothing)."""
    return f"{queue_key}:held:{worker_id}"


# Where a pool's Redis CA bundle (spec.redis.tls.caSecretRef) is mounted in its worker pods.
REDIS_CA_VOLUME = "workerpool-redis-ca"
REDIS_CA_DIR = "/etc/workerpool/redis-ca"
REDIS_CA_FILE = f"{REDIS_CA_DIR}/ca.crt"

# Where the workers' protocols and the operator keep their own keys: a queue key there
# would be scanned as a worker or collide with one (admission refuses it).
PROTOCOL_KEY_SPACES = ("worker:", "bifrost:pool:", "bifrost:exec:", "bifrost:operator:", "bifrost:workers:")
