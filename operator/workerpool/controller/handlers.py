"""The Kopf registry: every handler is a docstring and one call (the parts are made in `app.py`).

Only `on.event` handlers are used for WorkerPools and pods: Kopf then keeps no
state on the objects (no finalizer, no last-handled-configuration annotation,
no progress in status), so GitOps tools see only what users and the
operator's status writes put there. Kopf's storages are still given fixed
prefixes outside `bifrost.dev`, so that enabling a stateful handler later
cannot re-handle objects or swallow our annotations from diffs.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..contracts import names
from .adapters.kube import Kube
from .app import App, Stoppable
from .process.config import OperatorConfig


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure Kopf, then start the operator (`app.py`: the webhook when served, the pools, leadership)."""
    configure(settings)

    async def serve_webhook(kube: Kube, config: OperatorConfig) -> Stoppable:
        # Imported only when served: `cryptography` costs ~10 MiB of RSS.
        from .admission.webhook import WebhookKeeper

        keeper = WebhookKeeper(kube, config)
        await keeper.setup(settings)
        # Registered only when served: Kopf refuses to run admission handlers without a server.
        kopf.on.validate("", "v1", "pods", subresource="eviction", operations=["CREATE"], id="eviction")(eviction)
        return keeper

    memo.app = await App.start(serve_webhook)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop acting, give up the lease, stop every pool controller and Redis hub."""
    await memo.app.stop()


async def eviction(body: kopf.Body, dryrun: bool, memo: kopf.Memo, **_: Any) -> None:
    """Allow evicting a worker pod only when it runs no execution (else 429: the evicting client retries)."""
    verdict = await memo.app.manager.evictions.review(body.metadata.namespace or "", body.metadata.name or "", dryrun)
    if verdict is not None and not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=429)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)  # type: ignore[arg-type]
async def workerpool_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """A WorkerPool appeared, changed or went away."""
    await memo.app.manager.on_pool_event(event.get("type"), event["object"])


@kopf.on.event("", "v1", "pods", labels={names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE})  # type: ignore[arg-type]
def pod_event(event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    """A worker pod changed."""
    memo.app.manager.on_pod_event(event.get("type"), event["object"])


@kopf.on.probe(id="pools")
def pools_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness: fails when pool controllers stopped making progress."""
    result: dict[str, Any] = memo.app.manager.health()
    return result


def configure(settings: kopf.OperatorSettings) -> None:
    """All Kopf settings in one place."""
    settings.persistence.finalizer = f"{names.KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.KOPF_PREFIX, key="last-handled-configuration"
    )
    # Watches that silently stall are the classic operator failure: bound every call.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.posting.level = 40  # Kopf's own events only for errors; ours are posted explicitly
    settings.networking.request_timeout = 30
    settings.peering.standalone = True
    # No CRD or namespace scanning: resources are fixed, namespaces are given by
    # name (or the whole cluster), so the operator needs no RBAC for either.
    settings.scanning.disabled = True
