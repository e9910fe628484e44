"""The HTTPS server's side: the files it serves, and an SSLContext reloaded in place.

kopf's ``WebhookServer`` builds its SSLContext once per (re)start, and restarts its
listener (closing the port for a moment, when failurePolicy Ignore lets requests
through unchecked) when the cert files change. Instead, gatewatch hands kopf a
context it owns (``server_ssl_context``, passed with ``kopf_server_tls_options``)
and calls ``reload_server_ssl_context`` on renewal: ``SSLContext.load_cert_chain``
on the same context object, which asyncio uses for every new TLS connection
(established connections keep their certificate). kopf's own file polling is
turned off by a long ``file_check_interval`` so it never restarts the listener.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from cryptography import x509

from gatewatch.errors import CertificateError

logger = logging.getLogger(__name__)

# Called with the new material after it changed (renewal, rotation, another replica's renewal).
ChangeCallback = Callable[["ServingFiles"], Awaitable[None]]

# Long enough that kopf's WebhookServer never re-reads the files by itself (see module doc).
KOPF_FILE_CHECK_DISABLED = 365 * 24 * 3600.0


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


async def announce_change(on_change: ChangeCallback | None, files: ServingFiles, *, what: str) -> None:
    """Log that the material changed and hand it to ``on_change``; a failing callback is logged, never raised
    (the new material is in place either way)."""
    if on_change is None:
        return
    logger.info("%s changed, valid until %s", what, files.not_after.isoformat())
    try:
        await on_change(files)
    except Exception:
        logger.exception("certificate change callback failed (%s)", what)


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
