"""Certificates and keys for the dev control plane, generated with `cryptography`.

One self-signed CA signs the apiserver's serving cert and the client certs of the admin,
the controller-manager and the scheduler; the controller-manager also uses it to sign
CSRs. A separate front-proxy CA signs the cert the apiserver presents to aggregated API
servers (as kubeadm does: a client cert from the main CA must not be able to assert
request headers). A separate key signs service-account tokens. The real node adds a kubelet client
cert (`system:node:<node>`), a kube-proxy client cert, the client cert the apiserver
presents to the kubelet (for `kubectl logs/exec`), and serving certs for the kubelet and
metrics-server, so nothing on the node needs anonymous access or skips TLS verification.
ECDSA P-256 keys keep generation instant.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .network import NODE_IP, REAL_NODE_NAME

# First IP of --service-cluster-ip-range: the in-cluster address of the `kubernetes` service.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"

APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# NODE_IP: with the real node, the apiserver listens on the node bridge's address so pods
# reach it (through the `kubernetes` Service) from their own network namespaces.
APISERVER_IPS = ("127.0.0.1", KUBERNETES_SERVICE_IP, NODE_IP)
METRICS_SERVER_DNS_NAMES = ("localhost", "metrics-server.kube-system.svc")

_VALIDITY = datetime.timedelta(days=365)
# Tolerate small clock differences between the cert's creation and its use.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class ClientIdentity:
    """A client cert's subject: CN is the user name, O the groups."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "strata-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("kube-scheduler", "system:kube-scheduler")
KUBELET = ClientIdentity("kubelet", f"system:node:{REAL_NODE_NAME}", ("system:nodes",))
KUBE_PROXY = ClientIdentity("kube-proxy", "system:kube-proxy")
# What the apiserver presents to kubelets; kubelets authorize it by SubjectAccessReview.
APISERVER_KUBELET_CLIENT = ClientIdentity(
    "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
CLIENT_IDENTITIES = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KUBELET, KUBE_PROXY,
                     APISERVER_KUBELET_CLIENT)
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files under <state>/pki."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_ca_key(self) -> Path:
        return self.dir / "front-proxy-ca.key"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.dir / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    @property
    def kubelet_serving_cert(self) -> Path:
        return self.dir / "kubelet-serving.crt"

    @property
    def kubelet_serving_key(self) -> Path:
        return self.dir / "kubelet-serving.key"

    @property
    def metrics_server_cert(self) -> Path:
        return self.dir / "metrics-server.crt"

    @property
    def metrics_server_key(self) -> Path:
        return self.dir / "metrics-server.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.dir / f"{identity.file_stem}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.dir / f"{identity.file_stem}.key"

    def all_files(self) -> list[Path]:
        files = [
            self.ca_cert,
            self.ca_key,
            self.apiserver_cert,
            self.apiserver_key,
            self.front_proxy_ca_cert,
            self.front_proxy_ca_key,
            self.front_proxy_client_cert,
            self.front_proxy_client_key,
            self.service_account_key,
            self.service_account_public_key,
            self.kubelet_serving_cert,
            self.kubelet_serving_key,
            self.metrics_server_cert,
            self.metrics_server_key,
        ]
        for identity in CLIENT_IDENTITIES:
            files += [self.client_cert(identity), self.client_key(identity)]
        return files


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _certificate_builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
    )


def make_ca(common_name: str = "strata-dev-ca") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = _name(common_name)
    cert = (
        _certificate_builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA-signed serving (server=True) or client certificate."""
    key = _new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _certificate_builder(_name(common_name, organizations), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if dns_names or ip_addresses:
        san = [x509.DNSName(name) for name in dns_names]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def ensure_pki(directory: Path) -> Pki:
    """Generate the PKI into `directory` unless a complete one is already there.

    Reusing it across restarts keeps kubeconfigs and signed tokens valid.
    """
    pki = Pki(directory)
    if all(path.is_file() for path in pki.all_files()):
        return pki
    directory.mkdir(parents=True, exist_ok=True)

    ca_cert, ca_key = make_ca()
    pki.ca_cert.write_bytes(cert_pem(ca_cert))
    _write_private(pki.ca_key, key_pem(ca_key))

    serving_cert, serving_key = make_leaf(
        ca_cert, ca_key, "kube-apiserver",
        dns_names=APISERVER_DNS_NAMES, ip_addresses=APISERVER_IPS, server=True,
    )
    pki.apiserver_cert.write_bytes(cert_pem(serving_cert))
    _write_private(pki.apiserver_key, key_pem(serving_key))

    for cert_path, key_path, dns_names, ips in (
        (pki.kubelet_serving_cert, pki.kubelet_serving_key, (REAL_NODE_NAME,), (NODE_IP,)),
        (pki.metrics_server_cert, pki.metrics_server_key, METRICS_SERVER_DNS_NAMES,
         ("127.0.0.1",)),
    ):
        cert, key = make_leaf(ca_cert, ca_key, dns_names[0], dns_names=dns_names,
                              ip_addresses=ips, server=True)
        cert_path.write_bytes(cert_pem(cert))
        _write_private(key_path, key_pem(key))

    for identity in CLIENT_IDENTITIES:
        cert, key = make_leaf(ca_cert, ca_key, identity.user, organizations=identity.groups)
        pki.client_cert(identity).write_bytes(cert_pem(cert))
        _write_private(pki.client_key(identity), key_pem(key))

    front_proxy_ca_cert, front_proxy_ca_key = make_ca("strata-dev-front-proxy-ca")
    pki.front_proxy_ca_cert.write_bytes(cert_pem(front_proxy_ca_cert))
    _write_private(pki.front_proxy_ca_key, key_pem(front_proxy_ca_key))
    proxy_cert, proxy_key = make_leaf(front_proxy_ca_cert, front_proxy_ca_key, FRONT_PROXY_CLIENT)
    pki.front_proxy_client_cert.write_bytes(cert_pem(proxy_cert))
    _write_private(pki.front_proxy_client_key, key_pem(proxy_key))

    service_account_key = _new_key()
    _write_private(pki.service_account_key, key_pem(service_account_key))
    pki.service_account_public_key.write_bytes(public_key_pem(service_account_key))
    return pki


def ensure_serving_cert(pki: Pki, stem: str, *, dns_names: tuple[str, ...] = ("localhost",),
                        ip_addresses: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A serving cert and key signed by the cluster CA, for an add-on's webhook (the apiserver
    trusts it through the webhook's caBundle). Made once, next to the rest of the PKI; kept
    out of `all_files` so clusters without the add-on never regenerate their PKI for it."""
    cert_path, key_path = pki.dir / f"{stem}.crt", pki.dir / f"{stem}.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    cert, key = make_leaf(ca_cert, ca_key, dns_names[0], dns_names=dns_names,
                          ip_addresses=ip_addresses, server=True)
    _write_private(key_path, key_pem(key))
    cert_path.write_bytes(cert_pem(cert))
    return cert_path, key_path
