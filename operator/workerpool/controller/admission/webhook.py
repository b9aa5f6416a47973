"""Serving the eviction webhook: Kopf's webhook server (aiohttp, TLS, the
AdmissionReview protocol) with our certificate, renewed before it expires.

The ValidatingWebhookConfiguration itself is the chart's (declarative, visible
to GitOps, `failurePolicy: Ignore`, a short timeout); the operator only keeps
its `caBundle` current. Kopf's managed configuration is not used: it points
webhooks at a URL (not a Service), fixes the timeout at 30 s, and would turn
our label filter into an objectSelector that never matches an Eviction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from pathlib import Path

import kopf

from ..adapters.kube import ApiException, Kube
from ..process.config import OperatorConfig
from ..process.tasks import supervise
from .tls import WebhookTLS, make_tls, renew, still_good

log = logging.getLogger(__name__)

# Every replica re-reads the shared Secret this often: a certificate another replica renewed is
# served here within a minute (the previous one stays trusted far longer: tls.renew).
RENEW_CHECK_SECONDS = 60
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"


async def load_tls(kube: Kube, config: OperatorConfig) -> WebhookTLS:
    """The shared certificate from the Secret, made (or renewed) by whichever replica gets there first."""
    now = dt.datetime.now(dt.UTC)
    hosts = list(config.webhook_hosts)
    if not config.webhook_secret:
        return make_tls(hosts, now)  # one replica, no Secret: a certificate for this process only
    namespace, _, name = config.webhook_secret.partition("/")
    for _ in range(5):
        stored = await kube.read_secret(namespace, name)
        version = stored[1] if stored is not None else None
        current = WebhookTLS.from_secret_data(stored[0]) if stored is not None else None
        if current is not None and still_good(current, hosts, now):
            return current
        fresh = renew(current, hosts, now) if current is not None else make_tls(hosts, now)
        try:
            await kube.write_secret(namespace, name, fresh.as_secret_data(), version)
        except ApiException as exc:
            if exc.status == 409:
                continue  # another replica wrote one first: use that
            raise
        log.info("webhook certificate for %s written to Secret %s", ", ".join(hosts), config.webhook_secret)
        return fresh
    raise RuntimeError(f"Secret {config.webhook_secret}: kept changing while the webhook certificate was written")


class WebhookKeeper:
    """Writes the certificate files Kopf's server serves, and keeps them and the caBundle current."""

    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube, self.config = kube, config
        self.dir = Path(config.webhook_cert_dir)
        self.task: asyncio.Task[None] | None = None

    async def setup(self, settings: kopf.OperatorSettings) -> None:
        await self.refresh()
        settings.admission.server = kopf.WebhookServer(
            addr=self.config.webhook_addr or None,
            port=self.config.webhook_port,
            certfile=self.dir / CERT_FILE,
            pkeyfile=self.dir / KEY_FILE,
            file_check_interval=60.0,  # a renewed certificate is served within a minute
        )
        settings.admission.managed = None
        self.task = supervise("webhook-certificate", "webhook-certificate", self._renew_forever)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def refresh(self) -> None:
        tls = await load_tls(self.kube, self.config)
        self._write_files(tls)
        if self.config.webhook_configuration:
            await self.kube.inject_ca_bundle(self.config.webhook_configuration, tls.ca_pem)

    def _write_files(self, tls: WebhookTLS) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert = self.dir / CERT_FILE
        if cert.exists() and cert.read_bytes() == tls.cert_pem:
            return
        key = self.dir / KEY_FILE
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(tls.key_pem)
        cert.write_bytes(tls.cert_pem)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_CHECK_SECONDS)
            try:
                await self.refresh()
            except (ApiException, OSError, RuntimeError) as exc:
                log.warning("webhook certificate check failed (retried in %d s): %s", RENEW_CHECK_SECONDS, exc)
