"""The eviction webhook's certificates (controller/admission/tls.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from workerpool.controller.admission.tls import WebhookTLS, make_tls, renew, still_good

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def test_the_certificate_serves_its_hosts_and_is_renewed_before_it_expires() -> None:
    hosts = ["svc.ns.svc", "10.244.0.1"]
    tls = make_tls(hosts, NOW)
    assert still_good(tls, hosts, NOW)
    assert not still_good(tls, ["other.ns.svc"], NOW)
    assert not still_good(tls, hosts, NOW + dt.timedelta(days=340))
    assert b"PRIVATE KEY" in tls.key_pem and tls.ca_pem != tls.cert_pem


def test_the_serving_certificate_is_signed_by_its_ca_and_names_each_host() -> None:
    tls = make_tls(["svc.ns.svc", "10.244.0.1"], NOW)
    cert, ca = x509.load_pem_x509_certificate(tls.cert_pem), x509.load_pem_x509_certificate(tls.ca_pem)
    cert.verify_directly_issued_by(ca)  # raises when not
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.244.0.1")]


def verifies(tls: WebhookTLS, bundle: bytes) -> bool:
    """Would a client trusting `bundle` (the API server, with that caBundle) accept `tls`'s certificate?"""
    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, InvalidSignature):
            continue
    return False


def test_a_renewal_keeps_the_ca_so_a_replica_serving_the_old_certificate_stays_trusted() -> None:
    hosts = ["svc.ns.svc"]
    old = make_tls(hosts, NOW)
    later = NOW + dt.timedelta(days=340)
    new = renew(old, hosts, later)
    assert new.ca_pem == old.ca_pem and new.cert_pem != old.cert_pem and still_good(new, hosts, later)
    assert verifies(old, new.ca_pem) and verifies(new, new.ca_pem)  # no window: one bundle trusts both


def test_a_new_ca_is_trusted_beside_the_previous_one_until_that_expires() -> None:
    hosts = ["svc.ns.svc"]
    old = make_tls(hosts, NOW)
    near_ca_end = NOW + dt.timedelta(days=3650 - 10)
    new = renew(old, hosts, near_ca_end)
    assert new.ca_pem != old.ca_pem and new.ca_key_pem != old.ca_key_pem
    assert verifies(old, new.ca_pem) and verifies(new, new.ca_pem)
    assert len(x509.load_pem_x509_certificates(renew(new, hosts, near_ca_end + dt.timedelta(days=20)).ca_pem)) <= 2


def test_a_secret_from_before_without_the_ca_key_gets_a_new_ca_and_keeps_trusting_the_old() -> None:
    hosts = ["svc.ns.svc"]
    made = make_tls(hosts, NOW)
    stored = WebhookTLS.from_secret_data({k: v for k, v in made.as_secret_data().items() if k != "ca.key"})
    assert stored is not None and stored.ca_key_pem is None
    new = renew(stored, hosts, NOW + dt.timedelta(days=340))
    assert new.ca_key_pem is not None and verifies(made, new.ca_pem) and verifies(new, new.ca_pem)
    round_trip = WebhookTLS.from_secret_data(new.as_secret_data())
    assert round_trip == new
