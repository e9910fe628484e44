"""The webhook's TLS material: a CA, a serving certificate, and how both stay valid.

Two sources, one shape (``ServingFiles``: PEM file paths + the CA bundle the
API server must trust):

- ``CertificateManager`` (``certificates.mode: self-managed``): a CA and a
  serving certificate kept in a Secret in gatewatch's namespace, so every
  replica serves the same one. Replicas racing to create it: the loser gets
  409 Conflict and reads the winner's. Renewed well before expiry (serving
  certificate: 1 year, renewed when a third of its life remains; CA: 10 years,
  same rule). The Secret is polled, so a renewal by one replica reaches the
  others within ``interval``.
- ``FileCertificateSource`` (``certificates.mode: files``): files supplied by
  the user (cert-manager), polled for changes.

CA rotation without a failed request: the new CA is first *published* (added
to the bundle, the serving certificate still signed by the old one); only
after ``RenewalPolicy.ca_publish_delay`` (longer than every replica's poll
interval, so every replica has put the two-CA bundle into the webhook
configuration) does it start signing. The old CA stays in the bundle until it
expires.

Reloading without a restart: kopf's ``WebhookServer`` builds its SSLContext
once per (re)start, and restarts its listener (closing the port for a moment,
when failurePolicy Ignore lets requests through unchecked) when the cert files
change. Instead, gatewatch hands kopf a context it owns (``server_ssl_context``,
passed with ``kopf_server_tls_options``) and calls ``reload_server_ssl_context``
on renewal: ``SSLContext.load_cert_chain`` on the same context object, which
asyncio uses for every new TLS connection (established connections keep their
certificate). kopf's own file polling is turned off by a long
``file_check_interval`` so it never restarts the listener.

Client authentication (``webhook.clientCA``): the same context may require a
client certificate signed by a given CA, the one the kube-apiserver presents
when its AdmissionConfiguration names a kubeconfig for webhooks.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

import kubernetes.client
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewatch.errors import CertificateError, KubernetesApiError
from gatewatch.kube import rest
from gatewatch.kube.client import REQUEST_TIMEOUT_SECONDS, api_error

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
# Called with the new material after it changed (renewal, rotation, another replica's renewal).
ChangeCallback = Callable[["ServingFiles"], Awaitable[None]]

CLUSTER_DOMAIN = "cluster.local"
# Certificates start a little in the past: nodes' clocks are never exactly in step.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Long enough that kopf's WebhookServer never re-reads the files by itself (see module doc).
KOPF_FILE_CHECK_DISABLED = 365 * 24 * 3600.0
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "gatewatch"}
NEXT_CA_SINCE_ANNOTATION = "gatewatch.io/next-ca-published-at"

# Secret keys. ``tls.crt``/``tls.key``/``ca.crt`` follow the kubernetes.io/tls and
# cert-manager conventions; the rest is gatewatch's own.
SECRET_TLS_CERT = "tls.crt"
SECRET_TLS_KEY = "tls.key"
SECRET_CA_CERT = "ca.crt"
SECRET_CA_KEY = "ca.key"
SECRET_CA_BUNDLE = "ca-bundle.crt"
SECRET_NEXT_CA_CERT = "next-ca.crt"
SECRET_NEXT_CA_KEY = "next-ca.key"


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


@dataclass(frozen=True)
class ServingFiles:
    """What the HTTPS server loads and what the API server must trust."""

    cert_file: Path
    key_file: Path
    ca_file: Path  # holds ``ca_bundle``
    ca_bundle: bytes  # PEM, every CA the webhook configuration's caBundle lists
    not_after: dt.datetime  # the serving certificate's expiry

    @property
    def fingerprint(self) -> str:
        """Changes whenever the served certificate or the bundle does."""
        digest = hashlib.sha256()
        digest.update(self.cert_file.read_bytes())
        digest.update(self.ca_bundle)
        return digest.hexdigest()


class CertificateSource(Protocol):
    """Self-managed or user-supplied: the controller treats both alike."""

    async def ensure(self) -> ServingFiles: ...


# --- pure functions: names, issuing, inspecting -------------------------------------------------


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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_pem(certificate), key_pem=_key_pem(key))


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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert_pem=_cert_pem(certificate), key_pem=_key_pem(key))


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


def plan_renewal(
    state: TlsState | None,
    *,
    names: Sequence[str],
    now: dt.datetime,
    policy: RenewalPolicy = RenewalPolicy(),
) -> TlsState | None:
    """The state to store next, or None when ``state`` is fine as it is.

    Pure: the manager reads the Secret, asks this, and writes the answer back.
    """
    if state is None or now >= state.ca.certificate.not_valid_after_utc:
        # Nothing usable (first start, or a CA already expired: every request fails anyway).
        return _fresh_state(names=names, now=now, policy=policy)
    new = state
    trusted = tuple(pem for pem in state.trusted_cas if _valid_at(pem, now))
    if state.ca.cert_pem not in trusted:
        trusted = (state.ca.cert_pem, *trusted)
    if trusted != state.trusted_cas:
        new = replace(new, trusted_cas=trusted)

    if new.next_ca is not None and new.next_ca_since is not None and now - new.next_ca_since >= policy.ca_publish_delay:
        # Published long enough: every replica trusts it; it signs from now on.
        new = replace(new, ca=new.next_ca, next_ca=None, next_ca_since=None)
        new = replace(new, serving=issue_serving_certificate(
            ca=new.ca, names=names, now=now, lifetime=policy.serving_lifetime))
    elif new.next_ca is None and needs_renewal(new.ca.cert_pem, now, renew_fraction=policy.renew_fraction):
        next_ca = generate_ca(now=now, lifetime=policy.ca_lifetime)
        new = replace(new, next_ca=next_ca, next_ca_since=now,
                      trusted_cas=(*new.trusted_cas, next_ca.cert_pem))

    serving = new.serving.cert_pem
    if (
        not is_signed_by(serving, new.ca.cert_pem)
        or needs_renewal(serving, now, renew_fraction=policy.renew_fraction)
        or not covers_names(serving, names)
    ):
        new = replace(new, serving=issue_serving_certificate(
            ca=new.ca, names=names, now=now, lifetime=policy.serving_lifetime))
    return None if new == state else new


def _fresh_state(*, names: Sequence[str], now: dt.datetime, policy: RenewalPolicy) -> TlsState:
    ca = generate_ca(now=now, lifetime=policy.ca_lifetime)
    serving = issue_serving_certificate(ca=ca, names=names, now=now, lifetime=policy.serving_lifetime)
    return TlsState(ca=ca, serving=serving, trusted_cas=(ca.cert_pem,))


# --- the Secret ---------------------------------------------------------------------------------


def state_to_secret_data(state: TlsState) -> dict[str, str]:
    """The Secret's ``stringData``-like mapping (values are PEM text)."""
    data = {
        SECRET_TLS_CERT: state.serving.cert_pem,
        SECRET_TLS_KEY: state.serving.key_pem,
        SECRET_CA_CERT: state.ca.cert_pem,
        SECRET_CA_KEY: state.ca.key_pem,
        SECRET_CA_BUNDLE: state.ca_bundle,
    }
    if state.next_ca is not None:
        data[SECRET_NEXT_CA_CERT] = state.next_ca.cert_pem
        data[SECRET_NEXT_CA_KEY] = state.next_ca.key_pem
    return {key: value.decode("ascii") for key, value in data.items()}


def state_from_secret(secret: Mapping[str, Any], *, source: str) -> TlsState:
    """Reads a Secret (as JSON from the API); raises CertificateError naming the key that is wrong."""
    raw = secret.get("data") or {}
    values: dict[str, bytes] = {}
    for key, value in raw.items():
        try:
            values[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            raise CertificateError(f"key {key!r} is not base64", source=source) from None

    def pair(cert_key: str, key_key: str) -> KeyPair:
        for required in (cert_key, key_key):
            if not values.get(required):
                raise CertificateError(f"key {required!r} is missing or empty", source=source)
        check_key_pair(values[cert_key], values[key_key], source=f"{source}, keys {cert_key}/{key_key}")
        return KeyPair(cert_pem=values[cert_key], key_pem=values[key_key])

    ca = pair(SECRET_CA_CERT, SECRET_CA_KEY)
    serving = pair(SECRET_TLS_CERT, SECRET_TLS_KEY)
    bundle = values.get(SECRET_CA_BUNDLE) or ca.cert_pem
    try:
        trusted = tuple(_cert_pem(c) for c in x509.load_pem_x509_certificates(bundle))
    except ValueError as error:
        raise CertificateError(f"key {SECRET_CA_BUNDLE!r}: {error}", source=source) from None
    next_ca = pair(SECRET_NEXT_CA_CERT, SECRET_NEXT_CA_KEY) if SECRET_NEXT_CA_CERT in values else None
    since_text = ((secret.get("metadata") or {}).get("annotations") or {}).get(NEXT_CA_SINCE_ANNOTATION)
    next_ca_since = None
    if next_ca is not None:
        try:
            next_ca_since = dt.datetime.fromisoformat(since_text) if since_text else None
        except ValueError:
            raise CertificateError(f"annotation {NEXT_CA_SINCE_ANNOTATION!r} is not a timestamp: {since_text!r}",
                                   source=source) from None
        if next_ca_since is None:
            raise CertificateError(f"annotation {NEXT_CA_SINCE_ANNOTATION!r} is missing", source=source)
    return TlsState(ca=ca, serving=serving, trusted_cas=trusted, next_ca=next_ca, next_ca_since=next_ca_since)


def build_secret(
    state: TlsState,
    *,
    name: str,
    namespace: str,
    live: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Secret to create, or to replace ``live`` with.

    Replacing keeps what others put on the live Secret (labels, annotations such
    as Helm's, its immutable ``type``) and sends its resourceVersion as a
    precondition: 409 Conflict if someone wrote in between.
    """
    live_metadata = (live or {}).get("metadata") or {}
    labels = {**(live_metadata.get("labels") or {}), **MANAGED_BY_LABEL}
    annotations = dict(live_metadata.get("annotations") or {})
    annotations.pop(NEXT_CA_SINCE_ANNOTATION, None)
    if state.next_ca_since is not None:
        annotations[NEXT_CA_SINCE_ANNOTATION] = state.next_ca_since.isoformat()
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    if live_metadata.get("resourceVersion") is not None:
        metadata["resourceVersion"] = live_metadata["resourceVersion"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": (live or {}).get("type") or "kubernetes.io/tls",
        "metadata": metadata,
        "data": {key: base64.b64encode(value.encode("ascii")).decode("ascii")
                 for key, value in state_to_secret_data(state).items()},
    }


# --- the server side ----------------------------------------------------------------------------


def server_ssl_context(files: ServingFiles, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server-side SSLContext loaded with ``files``; reload it in place with ``reload_server_ssl_context``.

    ``client_ca`` (``webhook.clientCA``): a PEM CA bundle; the server then requires a
    client certificate it signed (the kube-apiserver's webhook client certificate),
    so a forged AdmissionReview from anything else that reaches the port is refused
    during the handshake. Only this bundle is trusted for clients, never the system
    CAs. Read once: a changed bundle takes effect on restart.
    """
    if client_ca is None:
        context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    else:
        context = _client_verifying_context(client_ca)
    reload_server_ssl_context(context, files)
    return context


def _client_verifying_context(client_ca: Path) -> ssl.SSLContext:
    try:
        pem = Path(client_ca).read_bytes()
    except OSError as error:
        raise CertificateError(f"cannot read the client CA bundle: {error.strerror or error}",
                               source=str(client_ca)) from None
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM CA bundle: {error}", source=str(client_ca)) from None
    # cadata, not the default verify paths: a certificate from a public CA must not pass.
    context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH, cadata=pem.decode("ascii", "replace"))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def reload_server_ssl_context(context: ssl.SSLContext, files: ServingFiles) -> None:
    """New TLS connections get the new certificate; established ones keep theirs."""
    try:
        context.load_cert_chain(str(files.cert_file), str(files.key_file))
    except (OSError, ssl.SSLError) as error:
        raise CertificateError(f"cannot load the certificate and key: {error}", source=str(files.cert_file)) from None


def kopf_server_tls_options(files: ServingFiles, context: ssl.SSLContext) -> dict[str, Any]:
    """Keyword arguments for ``kopf.WebhookServer`` (or a subclass) to serve with ``context``.

    kopf gets the paths only because it insists on them (it would otherwise try to
    generate its own self-signed certificate); ``cadata`` is the bundle for its client config.
    """
    return {
        "context": context,
        "certfile": str(files.cert_file),
        "pkeyfile": str(files.key_file),
        "cadata": files.ca_bundle,
        "file_check_interval": KOPF_FILE_CHECK_DISABLED,
    }


# --- self-managed: the Secret and its renewal loop ----------------------------------------------


class CertificateManager:
    """CA + serving certificate in a Secret, shared by every replica, renewed before expiry.

    ``ensure()`` makes the material exist and be current, writes the PEM files
    under ``work_dir`` and returns them. The operator's supervisor calls it every
    ``interval`` seconds (gatewatch.background); when the material changed (own renewal or another
    replica's), ``on_change`` is awaited with the new files: reload the server's
    SSLContext and update the webhook configuration's caBundle there.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        secret_name: str,
        names: Sequence[str],
        work_dir: Path,
        policy: RenewalPolicy = RenewalPolicy(),
        clock: Clock = utc_now,
        on_change: ChangeCallback | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._api_client = api_client
        self._timeout = request_timeout  # a blackholed API server must not hold a thread for good
        self.namespace = namespace
        self.secret_name = secret_name
        self.names = list(names)
        self.work_dir = Path(work_dir)
        self.policy = policy
        self._clock = clock
        self.on_change = on_change
        self._delivered: ServingFiles | None = None
        self._delivered_fingerprint: str | None = None

    @property
    def current(self) -> ServingFiles | None:
        """What ``ensure`` last returned."""
        return self._delivered

    @property
    def source(self) -> str:
        return f"secret {self.namespace}/{self.secret_name}"

    async def ensure(self) -> ServingFiles:
        """Current material, from the Secret (created or renewed if needed), written to ``work_dir``.

        ``on_change`` is awaited when the material differs from what the previous
        call returned (never on the first call: its caller uses the return value).
        Raises KubernetesApiError or CertificateError.
        """
        state = await self._converge()
        files = await asyncio.to_thread(self._write_files, state)
        fingerprint = files.fingerprint
        previous = self._delivered_fingerprint
        self._delivered, self._delivered_fingerprint = files, fingerprint
        if previous is not None and previous != fingerprint and self.on_change is not None:
            logger.info("serving certificate changed (%s), valid until %s", self.source, files.not_after.isoformat())
            try:
                await self.on_change(files)
            except Exception:
                logger.exception("certificate change callback failed; the new certificate is on disk")
        return files

    async def read_ca_bundle(self) -> bytes:
        """The bundle in the Secret now, without writing or calling back.

        For ``WebhookConfigurationReconciler(refresh_ca_bundle=...)``: another
        replica may have rotated the CA before this one's next ``run`` round.
        """
        secret = await self._read()
        if secret is not None:
            try:
                return state_from_secret(secret, source=self.source).ca_bundle
            except CertificateError:
                pass  # ensure() replaces it and says why
        if self._delivered is None:
            raise CertificateError("no certificate yet: call ensure() first", source=self.source)
        return self._delivered.ca_bundle

    async def _converge(self, attempts: int = 5) -> TlsState:
        # Each round: read, decide, write with the read resourceVersion as precondition.
        # A 409 means another replica wrote first: read theirs and decide again.
        for _ in range(attempts):
            secret = await self._read()
            state: TlsState | None = None
            if secret is not None:
                try:
                    state = state_from_secret(secret, source=self.source)
                except CertificateError as error:
                    logger.error("unusable TLS material, issuing new: %s", error)
            new_state = plan_renewal(state, names=self.names, now=self._clock(), policy=self.policy)
            if new_state is None:
                assert state is not None
                return state
            written = await self._write(new_state, live=secret)
            if written:
                self._log_transition(state, new_state)
                return new_state
        raise KubernetesApiError("kept conflicting with other writers", operation="update",
                                 kind="secret", name=self.secret_name, namespace=self.namespace, status=409)

    async def _read(self) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return rest.read_namespaced_secret(self._api_client, self.secret_name, self.namespace,
                                                   timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return None
                raise api_error(error, operation="read", kind="secret", name=self.secret_name,
                                namespace=self.namespace) from None

        return await asyncio.to_thread(call)

    async def _write(self, state: TlsState, *, live: Mapping[str, Any] | None) -> bool:
        """Creates (no ``live``) or replaces the Secret. True if written; False on 409 Conflict."""
        body = build_secret(state, name=self.secret_name, namespace=self.namespace, live=live)
        create = live is None

        def call() -> bool:
            try:
                if create:
                    rest.create_namespaced_secret(self._api_client, self.namespace, body, timeout=self._timeout)
                else:
                    rest.replace_namespaced_secret(self._api_client, self.secret_name, self.namespace, body,
                                                   timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status == 409:
                    return False
                raise api_error(error, operation="create" if create else "update", kind="secret",
                                name=self.secret_name, namespace=self.namespace) from None
            return True

        return await asyncio.to_thread(call)

    def _log_transition(self, old: TlsState | None, new: TlsState) -> None:
        if old is None:
            logger.info("issued a CA and a serving certificate for %s into %s", ", ".join(self.names), self.source)
            return
        if new.next_ca is not None and old.next_ca is None:
            logger.info("published a new CA in the bundle (%s); it signs after %s", self.source,
                        self.policy.ca_publish_delay)
        if new.ca != old.ca:
            logger.info("the new CA signs from now on (%s)", self.source)
        if new.serving != old.serving:
            logger.info("renewed the serving certificate (%s), valid until %s", self.source,
                        new.serving.certificate.not_valid_after_utc.isoformat())

    def _write_files(self, state: TlsState) -> ServingFiles:
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise CertificateError(f"cannot create the directory: {error.strerror or error}",
                                   source=str(self.work_dir)) from None
        files = ServingFiles(
            cert_file=self.work_dir / "tls.crt",
            key_file=self.work_dir / "tls.key",
            ca_file=self.work_dir / "ca.crt",
            ca_bundle=state.ca_bundle,
            not_after=state.serving.certificate.not_valid_after_utc,
        )
        # Key first: a reader that sees the new certificate then also finds its key.
        _write_atomically(files.key_file, state.serving.key_pem, mode=0o600)
        _write_atomically(files.cert_file, state.serving.cert_pem, mode=0o644)
        _write_atomically(files.ca_file, state.ca_bundle, mode=0o644)
        return files


# --- user-supplied files (cert-manager) ---------------------------------------------------------


class FileCertificateSource:
    """Certificate, key and CA files the user provides, polled for changes.

    A change that does not load (e.g. a key and certificate from different
    rotations, caught mid-update) is logged and the old material kept until
    the next poll.
    """

    def __init__(
        self,
        *,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.cert_file, self.key_file, self.ca_file = Path(cert_file), Path(key_file), Path(ca_file)
        self.on_change = on_change
        self._digest: str | None = None

    async def ensure(self) -> ServingFiles:
        """Reads and checks the files; raises CertificateError naming the file that is wrong."""
        files, digest = await asyncio.to_thread(self._load)
        previous, self._digest = self._digest, digest
        if previous is not None and previous != digest and self.on_change is not None:
            logger.info("certificate files changed (%s), valid until %s", self.cert_file, files.not_after.isoformat())
            try:
                await self.on_change(files)
            except Exception:
                logger.exception("certificate change callback failed")
        return files

    def _load(self) -> tuple[ServingFiles, str]:
        contents = {path: _read(path) for path in (self.cert_file, self.key_file, self.ca_file)}
        cert_pem, key_pem, bundle = contents[self.cert_file], contents[self.key_file], contents[self.ca_file]
        check_key_pair(cert_pem, key_pem, source=f"{self.cert_file} + {self.key_file}")
        try:
            x509.load_pem_x509_certificates(bundle)
        except ValueError as error:
            raise CertificateError(f"not a PEM CA bundle: {error}", source=str(self.ca_file)) from None
        digest = hashlib.sha256(cert_pem + key_pem + bundle).hexdigest()
        not_after = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
        files = ServingFiles(cert_file=self.cert_file, key_file=self.key_file, ca_file=self.ca_file,
                             ca_bundle=bundle, not_after=not_after)
        return files, digest


# --- helpers ------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertificateError(f"cannot read: {error.strerror or error}", source=str(path)) from None


def _write_atomically(path: Path, content: bytes, *, mode: int) -> None:
    # Same directory, then rename: a reader sees the old file or the new one, never half of one.
    try:
        if path.exists() and path.read_bytes() == content:
            return
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise CertificateError(f"cannot write: {error.strerror or error}", source=str(path)) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CertificateError(f"cannot write: {error.strerror or error}", source=str(path)) from None


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_bytes(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _valid_at(cert_pem: bytes, now: dt.datetime) -> bool:
    return now < x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def _canonical_name(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _ensure_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


__all__ = [
    "CertificateManager",
    "CertificateSource",
    "FileCertificateSource",
    "KeyPair",
    "RenewalPolicy",
    "ServingFiles",
    "TlsState",
    "certificate_names",
    "covers_names",
    "generate_ca",
    "issue_serving_certificate",
    "kopf_server_tls_options",
    "needs_renewal",
    "plan_renewal",
    "reload_server_ssl_context",
    "server_ssl_context",
    "service_dns_names",
    "serving_names",
]
