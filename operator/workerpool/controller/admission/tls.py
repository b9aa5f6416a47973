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
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return {"ca.crt": self.ca_pem, "tls.crt": self.cert_pem, "tls.key": self.key_pem}

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> WebhookTLS | None:
        try:
            return cls(data["ca.crt"], data["tls.crt"], data["tls.key"])
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


def make_tls(hosts: Sequence[str], now: dt.datetime) -> WebhookTLS:
    """A new CA and a serving certificate for `hosts` (DNS names or IP addresses), signed by it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("workerpool-operator webhook CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVING_DAYS))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookTLS(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def still_good(tls: WebhookTLS, hosts: Sequence[str], now: dt.datetime) -> bool:
    """Does this certificate serve `hosts` for at least RENEW_BEFORE more?"""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return names == _san(hosts) and cert.not_valid_after_utc - now > RENEW_BEFORE
