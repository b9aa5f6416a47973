"""The eviction webhook's TLS: a private CA and a serving certificate the
operator makes itself (no cert-manager needed), kept in one Secret so that
every replica serves the same certificate, and the CA injected into the
ValidatingWebhookConfiguration the chart ships.

Kopf's own self-signed certificates (certbuilder/oscrypto) are per process:
with two replicas each would overwrite the other's caBundle, so we make one
with `cryptography` and share it through the Secret.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_DAYS = 3650
SERVING_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class WebhookTLS:
    ca_pem: bytes  # the caBundle: the signing CA first, then a previous CA still trusted during a change
    cert_pem: bytes
    key_pem: bytes
    ca_key_pem: bytes | None = None  # the signing CA's key: renewals keep the CA (None: a Secret from before)

    def as_secret_data(self) -> dict[str, bytes]:
        data = {"ca.crt": self.ca_pem, "tls.crt": self.cert_pem, "tls.key": self.key_pem}
        if self.ca_key_pem is not None:
            data["ca.key"] = self.ca_key_pem
        return data

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> WebhookTLS | None:
        try:
            return cls(data["ca.crt"], data["tls.crt"], data["tls.key"], data.get("ca.key"))
        except KeyError:
            return None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _new_ca(now: dt.datetime) -> _CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("workerpool-operator webhook CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(key, hashes.SHA256())
    )
    return _CA(cert, key)


def _serving(ca: _CA, hosts: Sequence[str], now: dt.datetime) -> tuple[bytes, bytes]:
    """A serving certificate for `hosts` signed by `ca`, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVING_DAYS), ca.cert.not_valid_after_utc))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


def make_tls(hosts: Sequence[str], now: dt.datetime) -> WebhookTLS:
    """A new CA and a serving certificate for `hosts` (DNS names or IP addresses), signed by it."""
    ca = _new_ca(now)
    cert, key = _serving(ca, hosts, now)
    return WebhookTLS(_pem(ca.cert), cert, key, _key_pem(ca.key))


def renew(previous: WebhookTLS, hosts: Sequence[str], now: dt.datetime) -> WebhookTLS:
    """The next certificate, with no moment at which a replica serves one the API server does not trust.

    Signed by the same CA while it has its key and RENEW_BEFORE left: the caBundle does not change,
    so a replica still serving the previous certificate stays trusted. Otherwise a new CA signs it,
    and the bundle trusts the previous CA too until that expires: replicas pick the new certificate
    up within a minute (`WebhookKeeper`), long before the previous one could be distrusted."""
    ca = _signing_ca(previous, now)
    if ca is not None:
        cert, key = _serving(ca, hosts, now)
        return WebhookTLS(previous.ca_pem, cert, key, previous.ca_key_pem)
    fresh = make_tls(hosts, now)
    try:
        previous_ca = _bundle(previous.ca_pem)[:1]
    except ValueError:  # unreadable: nothing of it to keep trusting
        previous_ca = []
    still_trusted = [c for c in previous_ca if c.not_valid_after_utc > now]
    return WebhookTLS(fresh.ca_pem + b"".join(_pem(c) for c in still_trusted), fresh.cert_pem, fresh.key_pem,
                      fresh.ca_key_pem)  # fmt: skip


def _signing_ca(tls: WebhookTLS, now: dt.datetime) -> _CA | None:
    """The CA that signed `tls`, when its key is kept and it has long enough to go."""
    if tls.ca_key_pem is None:
        return None
    try:
        key = serialization.load_pem_private_key(tls.ca_key_pem, password=None)
        cert = _bundle(tls.ca_pem)[0]
    except (ValueError, IndexError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc - now <= RENEW_BEFORE:
        return None
    return _CA(cert, key)


def _bundle(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def still_good(tls: WebhookTLS, hosts: Sequence[str], now: dt.datetime) -> bool:
    """Does this certificate serve `hosts` for at least RENEW_BEFORE more?"""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return names == _san(hosts) and cert.not_valid_after_utc - now > RENEW_BEFORE
