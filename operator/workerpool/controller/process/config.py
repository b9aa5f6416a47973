"""Operator configuration: WORKERPOOL_* environment variables, declared once, validated at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, PositiveFloat, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ...contracts.wire import MAX_MESSAGE_BYTES
from ...decide.disruption import MarkPolicy
from ...decide.shards import Shard
from ...decide.template_policy import TemplatePolicy
from ...redis_connect import Identity
from ...settings_errors import describe

PREFIX = "WORKERPOOL_"


class OperatorConfigError(ValueError):
    pass


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, frozen=True, extra="ignore")

    # Comma-separated; empty = cluster-wide.
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    worker_image: str = "ghcr.io/bifrost-dev/workerpool-operator:0.1.0"
    resync_seconds: PositiveFloat = 10.0  # re-read of worker:* hashes pub/sub may have missed
    queue_poll_seconds: PositiveFloat = 0.25  # queue depth check (one pipelined call per Redis)
    # The bytes of one heartbeat message or one worker's registration read at all: what a
    # worker (or anything on its Redis) sends beyond it is refused unparsed (counted, logged).
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=4096, le=64 * 1024 * 1024)
    status_min_interval: PositiveFloat = Field(1.0, validation_alias=f"{PREFIX}STATUS_MIN_INTERVAL_SECONDS")
    status_volatile_refresh: PositiveFloat = Field(30.0, validation_alias=f"{PREFIX}STATUS_REFRESH_SECONDS")
    metrics_port: int = Field(8080, gt=0, lt=65536)
    liveness_port: int = Field(8081, gt=0, lt=65536)
    # The client-side limit on writes to the API server (pods, status, Events): a token bucket.
    # Sized for 1000 pools with 5 % of their workers changing state every heartbeat: about 50
    # status writes and 40 busy-mark patches a second; at 100 the status of 1000 pools fell 7-9 s
    # behind on the budget alone (docs/performance.md, "1000 pools at two API speeds"). As
    # Karpenter's client (200, burst 300); the in-flight bound protects a slow server.
    api_writes_per_second: PositiveFloat = 150.0
    api_write_burst: int = Field(300, ge=1)
    # Writes the API server holds at once (0: no limit). A slower server then keeps the backlog
    # here, in priority order (pods first), not in its own first-come queue (ratelimit.py).
    # 20: at 10 the bound itself cut the throughput when the server's answers slowed (75 ms mean,
    # longer tails: 44 status writes a second instead of 54); a create still waits behind at most
    # 20 of ours at the server (docs/performance.md, "1000 pools at two API speeds").
    api_writes_in_flight: int = Field(20, ge=0)

    # Busy workers' pods carry karpenter.sh/do-not-disrupt and cluster-autoscaler's
    # safe-to-evict=false (decide/disruption.py); idle this long before they are removed.
    busy_marks: bool = True
    busy_marks_hold_down_seconds: float = Field(60.0, ge=0)

    # Freeze the objects alive every this many seconds, so automatic garbage collections
    # skip them (controller/gc_policy.py); 0: CPython's own collections only.
    gc_freeze_seconds: float = Field(10.0, ge=0)

    # The eviction webhook (docs/operator.md, "Drains"); port 0: not served.
    webhook_port: int = Field(0, ge=0, lt=65536)
    webhook_addr: str = ""  # listen address; empty: every interface
    webhook_hosts: Annotated[tuple[str, ...], NoDecode] = ("localhost",)  # the certificate's names/IPs
    webhook_secret: str = ""  # namespace/name of the Secret that shares the certificate between replicas
    webhook_configuration: str = ""  # the ValidatingWebhookConfiguration whose caBundle the operator keeps
    webhook_cert_dir: str = "/tmp/workerpool-webhook"

    # The template policy (decide/template_policy.py; chart `templatePolicy`): off, or on with the
    # ServiceAccounts a pool's pods may use.
    template_policy_enabled: bool = Field(False, validation_alias=f"{PREFIX}TEMPLATE_POLICY")
    template_service_accounts: Annotated[tuple[str, ...], NoDecode] = ("default",)

    # This process's shard, "I/N" (empty: the only one): it acts on the pools that hash to I.
    shard: str = ""

    # Leader election on a Lease (docs/operator.md, "High availability"): only the holder acts.
    leader_election: bool = False
    lease_name: str = "workerpool-operator"
    # Default: the pod's own namespace and name (the downward API sets POD_NAMESPACE, POD_NAME).
    lease_namespace: str = Field("", validation_alias=AliasChoices(f"{PREFIX}LEASE_NAMESPACE", "POD_NAMESPACE"))
    identity: str = Field("", validation_alias=AliasChoices(f"{PREFIX}IDENTITY", "POD_NAME"))
    lease_duration_seconds: PositiveFloat = 15.0
    lease_renew_deadline_seconds: PositiveFloat = 10.0
    lease_retry_period_seconds: PositiveFloat = 2.0

    # The operator's own Redis user (DESIGN §3, the ACLs in docs/redis.md): replaces the user and
    # password of every pool's URL for the operator's connections. Empty: the URL's.
    redis_username: str = ""
    redis_password: SecretStr | None = None
    # Where that identity may be sent: the Redis endpoints ("host" or "host:port", as the
    # pools' URLs name them) set at install; every other URL gets its own credentials.
    # Required with a username. Over TLS only, unless plaintext is allowed too.
    redis_identity_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    redis_identity_plaintext: bool = False

    @property
    def redis_identity(self) -> Identity | None:
        if not self.redis_username:
            return None
        password = self.redis_password.get_secret_value() if self.redis_password is not None else None
        return Identity(
            self.redis_username, password, frozenset(self.redis_identity_hosts), self.redis_identity_plaintext
        )

    @property
    def template_policy(self) -> TemplatePolicy:
        return TemplatePolicy(self.template_policy_enabled, frozenset(self.template_service_accounts))

    @property
    def mark_policy(self) -> MarkPolicy:
        return MarkPolicy(self.busy_marks, self.busy_marks_hold_down_seconds)

    @model_validator(mode="after")
    def _identity_has_its_hosts(self) -> OperatorConfig:
        if self.redis_username and not self.redis_identity_hosts:
            raise ValueError(
                f"{PREFIX}REDIS_IDENTITY_HOSTS: required with {PREFIX}REDIS_USERNAME: the Redis hosts"
                " the operator's identity may be sent to (any other URL is used with its own credentials)"
            )
        return self

    @field_validator("namespaces", "webhook_hosts", "redis_identity_hosts", "template_service_accounts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:  # "a, b" -> ("a", "b")
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        Shard.parse(value)  # a clear error at start-up, not at the first pool
        return value

    @classmethod
    def from_env(cls) -> OperatorConfig:
        try:
            return cls()
        except ValidationError as exc:
            raise OperatorConfigError(describe(exc, PREFIX)) from None
