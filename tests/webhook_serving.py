"""gatewatch's webhook server on its own, over real TLS on loopback, for tests and benchmarks.

``serving(...)`` starts ``GuardedWebhookServer`` exactly as the operator does
(its listener, limits, TLS context from ``gatewatch.kube.certificates``) in
front of a real ``AdmissionReviewer`` with the packaged default rules; the
namespace labels and target pods it would look up come from plain functions
(the tests' stand-in for the API, as in test_operator_guard.py). What a test
sends is what any TLS client can send to the port.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatewatch.admission import AdmissionReviewer
from gatewatch.config import ServerLimits, Settings
from gatewatch.decision import Mode
from gatewatch.engine import RuleEngine
from gatewatch.kube.certificates import FileCertificateSource, kopf_server_tls_options, server_ssl_context
from gatewatch.kube.namespaces import LookupFailed, NamespaceModeResolver
from gatewatch.kube.pods import PodLookup
from gatewatch.metrics import Metrics
from gatewatch.rules import load_rules
from gatewatch.webhook_server import GuardedWebhookServer


def write_tls_files(directory: Path) -> None:
    """A CA and a serving certificate for 127.0.0.1, valid from a day before now to a year after
    (far enough for a test run under faketime +400d, which also moves what "now" is here)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatewatch.gatewatch.svc")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("gatewatch.gatewatch.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))


LabelsFetcher = Callable[[str], Awaitable[dict[str, str]]]


async def no_labels(namespace: str) -> dict[str, str]:
    return {}


async def no_pod(key: Any) -> dict[str, Any]:
    raise LookupFailed(f"pod {key[0]}/{key[1]}: 404 Not Found")


def reviewer_for(metrics: Metrics, *, mode: Mode = Mode.ENFORCE, labels: LabelsFetcher = no_labels,
                 pods: Callable[[Any], Awaitable[dict[str, Any]]] = no_pod) -> AdmissionReviewer:
    """A real reviewer with the packaged default rules, in ``mode`` for every namespace."""
    return AdmissionReviewer(
        engine=RuleEngine(load_rules()),
        namespace_modes=NamespaceModeResolver(Settings(mode=mode), fetch_labels=labels, cache_ttl=60),
        pod_lookup=PodLookup(pods, cache_ttl=60),
        metrics=metrics,
    )


@dataclass
class Served:
    server: GuardedWebhookServer
    metrics: Metrics
    port: int
    client_context: ssl.SSLContext  # trusts the serving CA

    def url(self, path: str = "/validate/pods") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw TLS connection to the port."""
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.client_context)


@contextlib.asynccontextmanager
async def serving(
    tls_dir: Path,
    *,
    limits: ServerLimits | None = None,
    deadline_seconds: float = 4.0,
    reviewer: AdmissionReviewer | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Served]:
    """The webhook server on 127.0.0.1 (a free port), until the block ends."""
    if not (tls_dir / "tls.crt").exists():
        write_tls_files(tls_dir)
    files = await FileCertificateSource(
        cert_file=tls_dir / "tls.crt", key_file=tls_dir / "tls.key", ca_file=tls_dir / "ca.crt").ensure()
    metrics = metrics or Metrics()
    server = GuardedWebhookServer(
        reviewer=reviewer or reviewer_for(metrics), metrics=metrics, limits=limits,
        deadline_seconds=deadline_seconds, addr="127.0.0.1", port=None, path="/validate",
        **kopf_server_tls_options(files, server_ssl_context(files)),
    )
    configs = server(None)  # type: ignore[arg-type]  # kopf's handler function: never called
    config = await configs.__anext__()
    port = int(str(config["url"]).split(":")[2].split("/")[0])
    client_context = ssl.create_default_context(cadata=(tls_dir / "ca.crt").read_text())
    try:
        yield Served(server=server, metrics=metrics, port=port, client_context=client_context)
    finally:
        await configs.aclose()


def pod_review(*, namespace: str | None = "shop", image: str = "nginx:1.27", uid: str = "u-1",
               **request_fields: Any) -> dict[str, Any]:
    """A Pod CREATE review as the API server sends it."""
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "name": "web",
        "userInfo": {"username": "alice@example.com", "uid": "u-7", "groups": ["system:authenticated"]},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace},
                   "spec": {"containers": [{"name": "app", "image": image}]}},
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        "dryRun": False,
    }
    if namespace is not None:
        request["namespace"] = namespace
    request.update(request_fields)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def exec_review(*, command: list[str], namespace: str = "shop", uid: str = "u-2") -> dict[str, Any]:
    """A pods/exec CONNECT review."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "exec",
        "operation": "CONNECT", "namespace": namespace, "name": "web",
        "userInfo": {"username": "alice@example.com"},
        "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": True, "tty": True,
                   "container": "app", "command": command},
    }}


def encode(review: Any) -> bytes:
    return json.dumps(review).encode()
