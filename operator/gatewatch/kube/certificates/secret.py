"""The TLS material as a Kubernetes Secret: its keys, and reading and writing it.

``tls.crt``/``tls.key``/``ca.crt`` follow the kubernetes.io/tls and cert-manager
conventions; the rest is gatewatch's own.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, Mapping

from cryptography import x509

from gatewatch.errors import CertificateError
from gatewatch.kube.certificates.material import KeyPair, TlsState, check_key_pair, pem_of_certificate

MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "gatewatch"}
NEXT_CA_SINCE_ANNOTATION = "gatewatch.io/next-ca-published-at"

SECRET_TLS_CERT = "tls.crt"
SECRET_TLS_KEY = "tls.key"
SECRET_CA_CERT = "ca.crt"
SECRET_CA_KEY = "ca.key"
SECRET_CA_BUNDLE = "ca-bundle.crt"
SECRET_NEXT_CA_CERT = "next-ca.crt"
SECRET_NEXT_CA_KEY = "next-ca.key"


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
        trusted = tuple(pem_of_certificate(c) for c in x509.load_pem_x509_certificates(bundle))
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
