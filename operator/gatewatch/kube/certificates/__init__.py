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

CA rotation without a failed request (``renewal``): a new CA is published in the
bundle before it signs. Reloading without a restart (``serving``): the server's
SSLContext is reloaded in place, so the listener never closes.

Client authentication (``webhook.clientCA``): the same context may require a
client certificate signed by a given CA, the one the kube-apiserver presents
when its AdmissionConfiguration names a kubeconfig for webhooks.

One module for each step: ``material`` (minting and reading certificates),
``renewal`` (what to store next), ``secret`` (the Secret's keys), ``manager``
(the self-managed loop), ``user_files`` (files from cert-manager), ``serving``
(the files and the SSLContext the HTTPS server uses).
"""
from __future__ import annotations

from gatewatch.kube.certificates.material import (
    KeyPair,
    RenewalPolicy,
    TlsState,
    certificate_names,
    covers_names,
    generate_ca,
    issue_serving_certificate,
    needs_renewal,
    service_dns_names,
    serving_names,
)
from gatewatch.kube.certificates.renewal import plan_renewal
from gatewatch.kube.certificates.serving import (
    CertificateSource,
    ServingFiles,
    kopf_server_tls_options,
    reload_server_ssl_context,
    server_ssl_context,
)
from gatewatch.kube.certificates.manager import CertificateManager
from gatewatch.kube.certificates.user_files import FileCertificateSource

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
