"""The eviction webhook's certificates (controller/admission/tls.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509

from workerpool.controller.admission.tls import make_tls, still_good

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
