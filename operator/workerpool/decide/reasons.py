"""Every condition type and reason, and the reasons a pod is deleted, in one place.

StrEnums: they are the strings written to the status and Events (the kstatus
vocabulary users and tools match on), and typed everywhere else.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(StrEnum):
    """`reason` of a WorkerPool condition."""

    WORKERS_READY = "WorkersReady"
    WAITING_FOR_WORKERS = "WaitingForWorkers"
    RECONCILED = "Reconciled"
    PROGRESSING = "Progressing"  # Stalled=False
    SCALING_UP = "ScalingUp"  # Reconciling=True
    SCALING_DOWN = "ScalingDown"
    PODS_CHANGING = "PodsChanging"
    WAITING_FOR_IDLE_WORKERS = "WaitingForIdleWorkers"
    REMOVALS_CALLED_OFF = "RemovalsCalledOff"  # each worker chosen for removal turned busy first
    REPLACING_OUTDATED_PODS = "ReplacingOutdatedPods"
    REDIS_UNAVAILABLE = "RedisUnavailable"
    REDIS_FAILOVER = "RedisFailover"  # a Sentinel URL's primary unreachable or being replaced
    REDIS_TLS_FAILED = "RedisTLSFailed"  # the server's certificate does not verify
    REDIS_AUTH_FAILED = "RedisAuthFailed"  # the credentials are refused
    REDIS_PERMISSION_DENIED = "RedisPermissionDenied"  # the ACL user may not run a command (named)
    # An operator loop reading this Redis or broker crashed (a bug or an input nobody foresaw):
    # restarted by its supervisor; nothing read through it is trusted until it succeeds again.
    LOOP_RESTARTING = "LoopRestarting"
    # Pools on one Redis server whose pods are named alike, with workers whose reports carry only
    # the pod name (Bifrost's): whose worker sent a report cannot be told.
    POD_NAMES_SHARED = "PodNamesShared"
    TEMPLATE_REFUSED = "TemplateRefused"  # the install's template policy refuses the pod template
    REDIS_CA_SECRET_NOT_FOUND = "RedisCASecretNotFound"
    REDIS_SECRET_NOT_FOUND = "RedisSecretNotFound"
    REDIS_URL_INVALID = "RedisURLInvalid"  # a URL that cannot be used (its scheme, its shape)
    REDIS_URL_REFUSED = "RedisURLRefused"  # a valid URL this pool cannot use (Sentinel for Bifrost's worker)
    RABBITMQ_UNAVAILABLE = "RabbitMQUnavailable"
    RABBITMQ_QUEUE_UNAVAILABLE = "RabbitMQQueueUnavailable"
    RABBITMQ_SECRET_NOT_FOUND = "RabbitMQSecretNotFound"
    PODS_REJECTED = "PodsRejected"
    INVALID_SPEC = "InvalidSpec"
    DELETING = "Deleting"  # Reconciling=True: a deleted pool retires its workers before it goes


class DeletionReason(StrEnum):
    """Why the operator deletes one of its pods."""

    REPLACE_FAILED = "ReplaceFailed"
    REPLACE_OUTDATED = "ReplaceOutdated"
    SCALE_DOWN = "ScaleDown"
