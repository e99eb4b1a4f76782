"""The generated PKI gives the apiserver and its clients the identities they need."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strata.devcluster.pki import ADMIN, CONTROLLER_MANAGER, SCHEDULER, ensure_pki


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_cert_covers_every_apiserver_address(tmp_path):
    pki = ensure_pki(tmp_path)
    cert = _load(pki.apiserver_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")} <= set(
        san.get_values_for_type(x509.IPAddress))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_client_certs_carry_user_and_groups_and_chain_to_the_ca(tmp_path):
    pki = ensure_pki(tmp_path)
    ca = _load(pki.ca_cert)
    for identity in (ADMIN, CONTROLLER_MANAGER, SCHEDULER):
        cert = _load(pki.client_cert(identity))
        cert.verify_directly_issued_by(ca)
        subject = cert.subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity.user
        groups = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert groups == list(identity.groups)
    admin_groups = _load(pki.client_cert(ADMIN)).subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)
    assert [a.value for a in admin_groups] == ["system:masters"]


def test_existing_pki_is_reused_and_private_keys_are_private(tmp_path):
    first = ensure_pki(tmp_path).ca_cert.read_bytes()
    pki = ensure_pki(tmp_path)
    assert pki.ca_cert.read_bytes() == first
    assert pki.ca_key.stat().st_mode & 0o077 == 0
    assert pki.service_account_key.stat().st_mode & 0o077 == 0


def test_service_account_public_key_matches_the_signing_key(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pki = ensure_pki(tmp_path)
    private = serialization.load_pem_private_key(pki.service_account_key.read_bytes(), None)
    public = serialization.load_pem_public_key(pki.service_account_public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()
