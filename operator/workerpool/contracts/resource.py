"""The WorkerPool resource (DESIGN §1) as pydantic models.

camelCase on the Kubernetes side comes from the same alias generator as the
wire models (`ContractModel`), so there is one snake_case <-> camelCase
mapping in the project. The CRD in `crds/` is generated from these models
(`workerpool.crd`); admission rules are declared once, here, as `CelRule`s
that carry both the CEL expression for the API server and the equivalent
Python check used when a model is built in-process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, StringConstraints, model_validator

from .names import DEFAULT_QUEUE_KEY, PROTOCOL_KEY_SPACES
from .wire import ContractModel, QueueStatus


@dataclass(frozen=True)
class CelRule:
    """An admission rule: `rule` is CEL for the API server, `check` the same in Python."""

    rule: str
    message: str
    check: Callable[[Any], bool]


class ResourceModel(ContractModel):
    """A part of the WorkerPool resource; enforces its CEL rules in Python too."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ResourceModel:
        for rule in self.cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


MAX_POOL_NAME = 63  # a label value

# Marks the field whose schema is Kubernetes' own PodTemplateSpec (see crd.py).
POD_TEMPLATE_SCHEMA_MARK = "x-workerpool-pod-template-spec"


# --- spec ----------------------------------------------------------------------


# A dotted Python module path (`package.module`), as `module:callable` names it.
ModuleName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", max_length=200)
]


class ProcessesSpec(ResourceModel):
    """The process pool inside each worker pod (the seed's min_workers/max_workers)."""

    min: int = Field(
        2, ge=1, le=256, description="Processes kept alive in each worker (MIN_WORKERS; protocol seed only)."
    )
    max: int = Field(
        10,
        ge=1,
        le=256,
        description="Most processes in each worker (MAX_WORKERS); also a worker's capacity when scaling.",
    )

    # max >= min is the pool's rule (WorkerPoolSpec): Bifrost's worker has no minimum of processes.


class SecretKeyRef(ResourceModel):
    """A key of a Secret in the WorkerPool's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    key: str = Field("url", min_length=1, max_length=253, description="Key in the Secret that holds the Redis URL.")


class CaSecretRef(SecretKeyRef):
    """A key of a Secret in the WorkerPool's namespace that holds a PEM CA bundle."""

    key: str = Field("ca.crt", min_length=1, max_length=253, description="Key in the Secret that holds the PEM bundle.")


class RedisTLSSpec(ResourceModel):
    """TLS to Redis (rediss://, rediss+sentinel://): what verifies the server's certificate."""

    ca_secret_ref: CaSecretRef | None = Field(
        None,
        description="CA bundle the operator verifies Redis with, mounted into worker pods (REDIS_TLS_CA_FILE);"
        " unset: the system CAs.",
    )


class RedisSpec(ResourceModel):
    """Where the pool's queue and heartbeats live. Exactly one of url / urlSecretRef."""

    url: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix|redis\+sentinel|rediss\+sentinel)://",
        max_length=2048,
        description="Redis URL: redis://, rediss:// (TLS), unix://, or redis+sentinel://[[user]:password@]host:port"
        "[,host:port...]/<master>[/<db>] (rediss+sentinel:// with TLS). Put a URL with a password in a Secret"
        " and use urlSecretRef instead.",
    )
    url_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding the Redis URL.")
    queue_key: str = Field(
        DEFAULT_QUEUE_KEY, min_length=1, max_length=512, description="Sorted set of pending execution ids."
    )
    tls: RedisTLSSpec | None = Field(None, description="TLS settings for rediss:// and rediss+sentinel:// URLs.")

    @property
    def ca_secret_ref(self) -> CaSecretRef | None:
        return self.tls.ca_secret_ref if self.tls is not None else None

    cel_rules = (
        CelRule(
            "has(self.url) != has(self.urlSecretRef)",
            "exactly one of redis.url or redis.urlSecretRef must be set",
            lambda s: (s.url is None) != (s.url_secret_ref is None),
        ),
        CelRule(
            " && ".join(f"!self.queueKey.startsWith('{p}')" for p in PROTOCOL_KEY_SPACES),
            "redis.queueKey must not be inside the workers' or the operator's key space ("
            + ", ".join(f"{p}*" for p in PROTOCOL_KEY_SPACES)
            + "): a queue there would be read as a worker, or overwrite one",
            lambda s: not s.queue_key.startswith(PROTOCOL_KEY_SPACES),
        ),
    )


# What the AMQP client can send in a queue.declare (pamqp's queue-name domain; a shortstr):
# a name outside it never reaches the broker, so it is refused here, not in the poll loop.
QUEUE_NAME_PATTERN = r"^[a-zA-Z0-9_.:@#,/+ -]+$"
QueueName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=QUEUE_NAME_PATTERN,
        description="A RabbitMQ queue name: letters, digits and _ . : @ # , / + - and space (the AMQP client's set).",
    ),
]


class RabbitMQSpec(ResourceModel):
    """The RabbitMQ broker whose queues hold the pool's work (protocol: bifrost). Exactly one of url / urlSecretRef."""

    url: str | None = Field(
        None,
        pattern=r"^amqps?://",
        max_length=2048,
        description="AMQP URL (amqp:// or amqps://). Put a URL with a password in a Secret and use urlSecretRef.",
    )
    url_secret_ref: SecretKeyRef | None = Field(None, description="Secret key holding the AMQP URL.")
    queues: list[QueueName] = Field(
        min_length=1,
        max_length=32,
        description="Queues whose messages are the pool's queued demand (summed): the ready ones, and with"
        " managementUrl also those delivered to a worker and not yet acknowledged; never declared, only read.",
    )
    management_url: str | None = Field(
        None,
        pattern=r"^https?://",
        max_length=2048,
        description="The broker's management API (http(s)://user:password@host:15672/): its count of each queue's"
        " unacknowledged messages (delivered to a worker that waits for a free process) is demand too. Put a URL"
        " with a password in a Secret and use managementUrlSecretRef.",
    )
    management_url_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the management API's URL."
    )

    cel_rules = (
        CelRule(
            "has(self.url) != has(self.urlSecretRef)",
            "exactly one of rabbitmq.url or rabbitmq.urlSecretRef must be set",
            lambda s: (s.url is None) != (s.url_secret_ref is None),
        ),
        CelRule(
            "!has(self.managementUrl) || !has(self.managementUrlSecretRef)",
            "at most one of rabbitmq.managementUrl or rabbitmq.managementUrlSecretRef may be set",
            lambda s: s.management_url is None or s.management_url_secret_ref is None,
        ),
    )


class ScalingSpec(ResourceModel):
    """How the number of worker pods follows demand."""

    scale_down_delay_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="Stabilization window: demand must stay lower this long before workers are removed.",
    )


Protocol = Literal["seed", "bifrost"]


def _sets_hostname(template: dict[str, Any]) -> bool:
    spec = template.get("spec") or {}
    return isinstance(spec, dict) and ("hostname" in spec or "subdomain" in spec)


def _has_container(template: dict[str, Any]) -> bool:
    spec = template.get("spec")
    return isinstance(spec, dict) and bool(spec.get("containers"))


def _grace_covers_drain(spec: WorkerPoolSpec) -> bool:
    pod = spec.template.get("spec")
    grace = pod.get("terminationGracePeriodSeconds") if isinstance(pod, dict) else None
    if not isinstance(grace, int):
        return True  # unset: the operator's default covers the deadline
    return grace > spec.execution_timeout_seconds + spec.graceful_shutdown_seconds


class WorkerPoolSpec(ResourceModel):
    """Desired state of a pool of worker pods."""

    protocol: Protocol = Field(
        "seed",
        description="The wire the pool's workers speak: seed (the reference worker) or bifrost"
        " (the worker the Bifrost platform ships; needs rabbitmq).",
    )
    min_workers: int = Field(1, ge=0, le=10000, description="Fewest worker pods.")
    max_workers: int = Field(10, ge=0, le=10000, description="Most worker pods; >= minWorkers.")
    processes: ProcessesSpec = Field(default_factory=ProcessesSpec)
    execution_timeout_seconds: int = Field(
        300, ge=1, le=86400, description="An execution running longer is terminated (SIGTERM, then SIGKILL)."
    )
    graceful_shutdown_seconds: int = Field(5, ge=0, le=3600, description="Wait between SIGTERM and SIGKILL.")
    recycle_after_executions: int = Field(
        0, ge=0, description="Replace a process after this many executions; 0 = never."
    )
    heartbeat_interval_seconds: int = Field(10, ge=1, le=300, description="Seconds between worker heartbeats.")
    allowed_modules: list[ModuleName] | None = Field(
        None,
        max_length=64,
        description="protocol seed: the Python modules (and their submodules) whose functions the workers run"
        " (WORKER_ALLOWED_MODULES); an execution naming another is failed unrun (FunctionNotAllowed). Unset: any"
        " module the image can import, so anyone who can write the pool's Redis queue runs code in its pods: set"
        " it wherever the Redis is shared (docs/security.md).",
    )
    redis: RedisSpec
    rabbitmq: RabbitMQSpec | None = Field(
        None, description="protocol: bifrost only: the broker and queues whose ready messages are demand."
    )
    drains_on_sigterm: bool = Field(
        False,
        description="protocol bifrost: whether the pool's worker drains on SIGTERM (Bifrost's newer worker: it"
        " takes no new delivery and finishes what it holds within BIFROST_DRAIN_DEADLINE_SECONDS). true: SIGTERM"
        " retires a worker, so scale-down and rollouts remove the least busy worker at once and evictions are"
        " allowed; false (the safe default, Bifrost's older worker whose SIGTERM kills what runs): a worker is"
        " removed only when two heartbeats show it runs nothing.",
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    metrics_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="Serve each worker's Prometheus metrics on this port (container port named `metrics`);"
        " unset: no metrics endpoint.",
    )
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="Pod template for worker pods, as in a Deployment.",
        json_schema_extra={POD_TEMPLATE_SCHEMA_MARK: True},
    )

    cel_rules = (
        CelRule(
            "self.maxWorkers >= self.minWorkers",
            "maxWorkers must be >= minWorkers",
            lambda s: s.max_workers >= s.min_workers,
        ),
        CelRule(
            "self.protocol == 'bifrost' || self.processes.max >= self.processes.min",
            "processes.max must be >= processes.min",
            lambda s: s.protocol == "bifrost" or s.processes.max >= s.processes.min,
        ),
        CelRule(
            "self.protocol == 'bifrost' ? has(self.rabbitmq) : !has(self.rabbitmq)",
            "rabbitmq is required when protocol is bifrost and not allowed otherwise",
            lambda s: (s.protocol == "bifrost") == (s.rabbitmq is not None),
        ),
        CelRule(
            "self.protocol != 'bifrost' || !has(self.redis.tls) || !has(self.redis.tls.caSecretRef)",
            "redis.tls.caSecretRef is for the reference worker (REDIS_TLS_CA_FILE): Bifrost's worker verifies"
            " Redis with its image's CAs",
            lambda s: s.protocol != "bifrost" or s.redis.ca_secret_ref is None,
        ),
        CelRule(
            "self.protocol != 'bifrost' || !has(self.template.spec)"
            " || (!has(self.template.spec.hostname) && !has(self.template.spec.subdomain))",
            "protocol bifrost: template.spec.hostname and subdomain are not allowed: Bifrost's worker names itself"
            " by its hostname, and pods of one pool would share it (the operator tells workers apart by it)",
            lambda s: s.protocol != "bifrost" or not _sets_hostname(s.template),
        ),
        CelRule(
            "self.protocol != 'bifrost' || !has(self.allowedModules)",
            "allowedModules is for protocol seed (the reference worker reads WORKER_ALLOWED_MODULES)",
            lambda s: s.protocol != "bifrost" or s.allowed_modules is None,
        ),
        CelRule(
            "self.protocol == 'bifrost' || !self.drainsOnSigterm",
            "drainsOnSigterm is for protocol bifrost (the seed's worker is retired through Redis)",
            lambda s: s.protocol == "bifrost" or not s.drains_on_sigterm,
        ),
        CelRule(
            "!self.drainsOnSigterm || !has(self.template.spec)"
            " || !has(self.template.spec.terminationGracePeriodSeconds)"
            " || self.template.spec.terminationGracePeriodSeconds"
            " > self.executionTimeoutSeconds + self.gracefulShutdownSeconds",
            "drainsOnSigterm: template.spec.terminationGracePeriodSeconds must exceed executionTimeoutSeconds +"
            " gracefulShutdownSeconds (the worker's drain deadline), or the kubelet kills a drain before it ends",
            lambda s: not s.drains_on_sigterm or _grace_covers_drain(s),
        ),
        CelRule(
            "self.protocol != 'bifrost' || (has(self.template.spec) && size(self.template.spec.containers) > 0)",
            "protocol bifrost needs template.spec.containers (Bifrost's worker image and command)",
            lambda s: s.protocol != "bifrost" or _has_container(s.template),
        ),
    )


# --- status --------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ContractModel):
    """metav1.Condition."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field("", max_length=32768)
    observed_generation: NonNegativeInt = 0
    last_transition_time: datetime


class ExecutionDetail(ContractModel):
    execution_id: str
    started_at: datetime
    elapsed_seconds: NonNegativeFloat


class ProcessDetail(ContractModel):
    """One process of a worker, as its last heartbeat reported it (a killed one may carry its execution)."""

    pid: int
    process_id: str
    state: Literal["idle", "busy", "killed"]
    memory_mb: NonNegativeFloat
    uptime_seconds: NonNegativeFloat
    executions_completed: NonNegativeInt
    execution: ExecutionDetail | None = None


class WorkerDetail(ContractModel):
    """The seed's WorkerInfo in camelCase (DESIGN §3): minWorkers/maxWorkers are the worker's *process* bounds."""

    worker_id: str
    started_at: datetime
    hostname: str
    min_workers: NonNegativeInt
    max_workers: NonNegativeInt
    pool_size: NonNegativeInt
    idle_count: NonNegativeInt
    busy_count: NonNegativeInt
    processes: list[ProcessDetail] = Field(default_factory=list)


RecycleTargetStatus = Literal["recycle_requested", "rejected"]


class RecycleResult(ContractModel):
    """What happened to one target of a recycle request (DESIGN §4)."""

    worker_id: str
    pid: int | None = None
    status: RecycleTargetStatus
    reason: str = ""


class LastRecycle(ContractModel):
    """The last recycle request handled; `request` is the annotation value."""

    request: str
    handled_at: datetime
    results: list[RecycleResult] = Field(default_factory=list)
    results_omitted: NonNegativeInt | None = Field(
        None, description="Targets handled but left out of results to bound the object's size."
    )


class WorkerPoolStatus(ContractModel):
    """Observed state of the pool, rebuilt from observation on every change."""

    observed_generation: NonNegativeInt | None = None
    desired_workers: NonNegativeInt | None = None
    workers: NonNegativeInt | None = Field(None, description="Worker pods that exist and are not terminating.")
    ready_workers: NonNegativeInt | None = Field(None, description="Pods that run and have a live registration.")
    pool_size: NonNegativeInt | None = Field(None, description="Processes over all live workers.")
    idle_count: NonNegativeInt | None = None
    busy_count: NonNegativeInt | None = None
    queue: QueueStatus | None = None
    worker_details: list[WorkerDetail] | None = Field(
        None,
        description="The seed's WorkerInfo per live worker (bounded; see workerDetailsOmitted).",
    )
    worker_details_omitted: NonNegativeInt | None = Field(
        None,
        description="Workers left out of workerDetails to bound the object's size; the sums count them.",
    )
    process_details_omitted: NonNegativeInt | None = Field(
        None,
        description="Workers in workerDetails shown without their process list to bound the object's size.",
    )
    last_recycle: LastRecycle | None = None
    conditions: list[Condition] | None = None
    kopf: dict[str, Any] | None = Field(None, description="The operator framework's own bookkeeping.")


class WorkerPool(ContractModel):
    """A parsed WorkerPool object (only the parts the operator reads)."""

    # Its pods carry the name as a label value (63 characters at most); the CRD refuses longer
    # names, and an object admitted before that reads as invalid, with this reason.
    name: str = Field(max_length=MAX_POOL_NAME)
    namespace: str
    uid: str
    generation: NonNegativeInt = 0
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    deleting_since: datetime | None = None  # metadata.deletionTimestamp: the pool is being deleted
    spec: WorkerPoolSpec
    status: WorkerPoolStatus = Field(default_factory=WorkerPoolStatus)

    @classmethod
    def from_body(cls, body: Any) -> WorkerPool:
        """Parse a raw Kubernetes object (dict-like, camelCase)."""
        meta = body.get("metadata", {}) or {}
        status = dict(body.get("status") or {})
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            generation=meta.get("generation", 0) or 0,
            annotations=dict(meta.get("annotations") or {}),
            finalizers=tuple(meta.get("finalizers") or ()),
            deleting_since=meta.get("deletionTimestamp"),
            spec=WorkerPoolSpec.model_validate(dict(body.get("spec") or {})),
            status=WorkerPoolStatus.model_validate(status),
        )
