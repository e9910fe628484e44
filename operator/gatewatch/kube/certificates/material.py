"""Certificates as values: the names a serving certificate needs, minting a CA and a
serving certificate, and reading what a PEM certificate says. No I/O, no clock of its own:
``now`` is always passed in.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewatch.errors import CertificateError

Clock = Callable[[], dt.datetime]

CLUSTER_DOMAIN = "cluster.local"
# Certificates start a little in the past: nodes' clocks are never exactly in step.
CLOCK_SKEW = dt.timedelta(minutes=5)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class RenewalPolicy:
    ca_lifetime: dt.timedelta = dt.timedelta(days=3650)
    serving_lifetime: dt.timedelta = dt.timedelta(days=365)
    # Renew when less than this fraction of a certificate's lifetime remains.
    renew_fraction: float = 1 / 3
    # How long a new CA sits in the bundle before it signs (see module doc).
    ca_publish_delay: dt.timedelta = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class TlsState:
    """Everything the Secret holds."""

    ca: KeyPair  # signs ``serving``
    serving: KeyPair
    trusted_cas: tuple[bytes, ...]  # PEM CA certificates: the webhook's caBundle
    next_ca: KeyPair | None = None  # published in ``trusted_cas``, not signing yet
    next_ca_since: dt.datetime | None = None

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(_ensure_newline(pem) for pem in self.trusted_cas)


def service_dns_names(name: str, namespace: str, *, cluster_domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The names the API server may use to reach a Service."""
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{cluster_domain}"]


def serving_names(
    *,
    service_name: str,
    service_namespace: str,
    url: str | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """The serving certificate's SANs: the Service's DNS names, the URL's host (local mode), extras."""
    names = service_dns_names(service_name, service_namespace)
    if url:
        host = urlsplit(url).hostname
        if not host:
            raise CertificateError(f"webhook URL {url!r} has no host", source="webhook.url")
        names.append(host)
    names.extend(extra)
    return list(dict.fromkeys(names))  # de-duplicated, order kept


def generate_ca(
    *,
    now: dt.datetime,
    lifetime: dt.timedelta = RenewalPolicy.ca_lifetime,
    common_name: str = "gatewatch webhook CA",
) -> KeyPair:
    """A self-signed CA that may only sign end-entity certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewatch"),
        # The serial in the name tells a rotated CA from its predecessor in logs and bundles.
        x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {now:%Y%m%d%H%M%S}"),
    ])
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=pem_of_certificate(certificate), key_pem=_key_pem(key))


def issue_serving_certificate(
    *,
    ca: KeyPair,
    names: Sequence[str],
    now: dt.datetime,
    lifetime: dt.timedelta = RenewalPolicy.serving_lifetime,
) -> KeyPair:
    """A server certificate for ``names`` (DNS names or IP addresses), signed by ``ca``.

    Never outlives its CA: a certificate valid longer than its issuer would fail anyway.
    """
    if not names:
        raise CertificateError("a serving certificate needs at least one name")
    ca_certificate = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    not_after = min(now + lifetime, ca_certificate.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert_pem=pem_of_certificate(certificate), key_pem=_key_pem(key))


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only; a CA's key also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=signs_certificates, crl_sign=signs_certificates,
        encipher_only=False, decipher_only=False,
    )


def needs_renewal(
    cert_pem: bytes,
    now: dt.datetime,
    *,
    renew_fraction: float = RenewalPolicy.renew_fraction,
) -> bool:
    """True when less than ``renew_fraction`` of the certificate's lifetime remains (or it is not valid now)."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < not_before or now >= not_after:
        return True
    return (not_after - now) < (not_after - not_before) * renew_fraction


def certificate_names(cert_pem: bytes) -> set[str]:
    """The DNS names and IP addresses (as text) a certificate is valid for."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}


def covers_names(cert_pem: bytes, names: Iterable[str]) -> bool:
    present = certificate_names(cert_pem)
    return all(_canonical_name(name) in present for name in names)


def is_signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    certificate = x509.load_pem_x509_certificate(cert_pem)
    issuer = x509.load_pem_x509_certificate(ca_cert_pem)
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_key_pair(cert_pem: bytes, key_pem: bytes, *, source: str) -> None:
    """Raises CertificateError unless ``cert_pem`` is a certificate and ``key_pem`` its key."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate: {error}", source=source) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateError(f"not an unencrypted PEM private key: {error}", source=source) from None
    if _public_bytes(certificate.public_key()) != _public_bytes(key.public_key()):
        raise CertificateError("the private key does not belong to the certificate", source=source)


def valid_at(cert_pem: bytes, now: dt.datetime) -> bool:
    return now < x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def pem_of_certificate(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_bytes(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _canonical_name(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _ensure_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"
