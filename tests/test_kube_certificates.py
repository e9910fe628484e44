"""The webhook's certificates: real X.509 from ``cryptography``, real TLS on 127.0.0.1, the Secret in kube_emulator."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl

import aiohttp
import kmock
import kopf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kube_emulator import (  # noqa: F401  (fixtures)
    SECRETS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    kube_api_client,
    kube_emulator,
    put_object,
    read_object,
)

from gatewatch.errors import CertificateError, KubernetesApiError
from gatewatch.kube.certificates import (
    CertificateManager,
    FileCertificateSource,
    KeyPair,
    RenewalPolicy,
    ServingFiles,
    generate_ca,
    issue_serving_certificate,
    kopf_server_tls_options,
    needs_renewal,
    reload_server_ssl_context,
    server_ssl_context,
    serving_names,
)
from gatewatch.kube.webhook_configuration import (
    ServiceTarget,
    WebhookConfigurationReconciler,
    WebhookHandler,
    WebhookRegistration,
)
from gatewatch.decision import Mode
from gatewatch.namespace_modes import ModePolicy

NAMESPACE_CLASSES = ModePolicy(default=Mode.WARN, excluded=("gatewatch", "kube-system")).namespace_classes()

T0 = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.timezone.utc)
NAMES = serving_names(service_name="gatewatch", service_namespace="gatewatch")
SERVICE_HOST = "gatewatch.gatewatch.svc"  # what the API server verifies


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def make_manager(api_client, tmp_path, clock, *, work="work", on_change=None) -> CertificateManager:
    return CertificateManager(api_client, namespace="gatewatch", secret_name="gatewatch-tls", names=NAMES,
                              work_dir=tmp_path / work, clock=clock, on_change=on_change)


def bundle_certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def verify_for(name: str, cert_pem: bytes, trusted_pem: bytes, at: dt.datetime) -> None:
    """Chain ``cert_pem`` to ``trusted_pem`` for the server name, as a TLS client would."""
    store = verification.Store(bundle_certificates(trusted_pem))
    try:
        subject = verification.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = verification.DNSName(name)
    verifier = verification.PolicyBuilder().store(store).time(at).build_server_verifier(subject)
    verifier.verify(x509.load_pem_x509_certificate(cert_pem), [])


def secret_value(emulator, key: str) -> bytes:
    secret = read_object(emulator, SECRETS, "gatewatch", "gatewatch-tls")
    return base64.b64decode(secret["data"][key])


# --- issuing ------------------------------------------------------------------------------------


def test_serving_certificate_is_valid_for_every_service_name_and_chains_to_the_ca():
    assert NAMES == ["gatewatch", "gatewatch.gatewatch", "gatewatch.gatewatch.svc",
                     "gatewatch.gatewatch.svc.cluster.local"]
    ca = generate_ca(now=T0)
    serving = issue_serving_certificate(ca=ca, names=NAMES, now=T0)
    for name in NAMES:
        verify_for(name, serving.cert_pem, ca.cert_pem, T0)
    with pytest.raises(verification.VerificationError):
        verify_for("other.gatewatch.svc", serving.cert_pem, ca.cert_pem, T0)
    with pytest.raises(verification.VerificationError):
        verify_for(SERVICE_HOST, serving.cert_pem, generate_ca(now=T0).cert_pem, T0)


def test_local_mode_adds_the_url_host_as_an_ip_address():
    names = serving_names(service_name="gatewatch", service_namespace="gw", url="https://172.18.0.1:8443")
    ca = generate_ca(now=T0)
    serving = issue_serving_certificate(ca=ca, names=names, now=T0)
    verify_for("172.18.0.1", serving.cert_pem, ca.cert_pem, T0)
    verify_for("gatewatch.gw.svc", serving.cert_pem, ca.cert_pem, T0)


def test_renewal_is_due_when_a_third_of_the_life_remains():
    ca = generate_ca(now=T0)
    serving = issue_serving_certificate(ca=ca, names=NAMES, now=T0, lifetime=dt.timedelta(days=365))
    assert not needs_renewal(serving.cert_pem, T0 + dt.timedelta(days=240))
    assert needs_renewal(serving.cert_pem, T0 + dt.timedelta(days=250))
    assert needs_renewal(serving.cert_pem, T0 + dt.timedelta(days=400))  # expired
    assert not needs_renewal(ca.cert_pem, T0 + dt.timedelta(days=2400))
    assert needs_renewal(ca.cert_pem, T0 + dt.timedelta(days=2450))


# --- the Secret and the manager -----------------------------------------------------------------


async def test_managed_certificate_serves_https_verified_by_the_ca_bundle_alone(kube_api_client, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)  # OpenSSL checks validity against the real clock
    files = await make_manager(kube_api_client, tmp_path, Clock(now)).ensure()
    context = server_ssl_context(files)
    async with running_kopf_server(files, context) as port:
        peer = await peer_certificate(port, trust=files.ca_bundle)
        assert peer == x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        # The webhook answers through it.
        trusting = ssl.create_default_context(cadata=files.ca_bundle.decode())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"https://127.0.0.1:{port}/validate/pods", json=REVIEW,
                                    ssl=trusting, server_hostname=SERVICE_HOST) as response:
                assert response.status == 200
                assert (await response.json())["response"]["uid"] == "u-1"
        # A client that does not trust the bundle refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            await peer_certificate(port, trust=generate_ca(now=now).cert_pem)


async def test_two_managers_racing_for_the_secret_end_with_the_same_certificate(
        kube_emulator, kube_api_client, tmp_path):
    # Hold both replicas' first reads until both have read "404": both then create, one gets 409.
    both_read = asyncio.Barrier(2)

    async def after_both_reads(request):
        await both_read.wait()
        raise NotImplementedError  # fall through to the emulator's own answer

    kube_emulator["get /api/v1/namespaces/gatewatch/secrets/gatewatch-tls"][:2] << after_both_reads
    first = make_manager(kube_api_client, tmp_path, Clock(T0), work="a")
    second = make_manager(kube_api_client, tmp_path, Clock(T0), work="b")

    files_a, files_b = await asyncio.wait_for(asyncio.gather(first.ensure(), second.ensure()), timeout=20)

    creates = [r for r in kube_emulator if r.method == "POST" and r.resource == "v1/secrets"]
    assert len(creates) == 2  # the race did happen
    assert files_a.cert_file.read_bytes() == files_b.cert_file.read_bytes() == secret_value(kube_emulator, "tls.crt")
    assert files_a.ca_bundle == files_b.ca_bundle


async def test_a_replica_reuses_the_secret_another_one_created(kube_emulator, kube_api_client, tmp_path):
    files_a = await make_manager(kube_api_client, tmp_path, Clock(T0), work="a").ensure()
    files_b = await make_manager(kube_api_client, tmp_path, Clock(T0 + dt.timedelta(days=30)), work="b").ensure()
    assert files_b.cert_file.read_bytes() == files_a.cert_file.read_bytes()
    assert files_b.key_file.read_bytes() == files_a.key_file.read_bytes()
    assert files_a.key_file.stat().st_mode & 0o077 == 0  # the key is private to the process


async def test_renewal_near_expiry_updates_the_secret_the_server_and_the_ca_bundle(
        kube_emulator, kube_api_client, tmp_path):
    clock = Clock(T0)
    changes: list[ServingFiles] = []
    manager = make_manager(kube_api_client, tmp_path, clock)
    files = await manager.ensure()
    registration = WebhookRegistration(
        name="gatewatch", handlers=(WebhookHandler("pods", "pods", ("CREATE",)),),
        namespace_classes=NAMESPACE_CLASSES, service=ServiceTarget("gatewatch", "gatewatch"))
    reconciler = WebhookConfigurationReconciler(kube_api_client, registration=registration,
                                                ca_bundle=files.ca_bundle)
    await reconciler.reconcile_once()
    context = server_ssl_context(files)

    async def on_change(new_files: ServingFiles) -> None:  # what `gatewatch run` wires up
        changes.append(new_files)
        reconciler.set_ca_bundle(new_files.ca_bundle)
        await reconciler.reconcile_once()  # the API server trusts a new CA before it is served
        reload_server_ssl_context(context, new_files)

    manager.on_change = on_change
    first_serving = files.cert_file.read_bytes()

    async with running_kopf_server(files, context) as port:
        clock.now = T0 + dt.timedelta(days=200)
        await manager.ensure()
        assert changes == []  # nothing due yet

        # A third of the serving certificate's life left: renewed, same CA.
        clock.now = T0 + dt.timedelta(days=250)
        await manager.ensure()
        assert len(changes) == 1
        renewed = changes[-1].cert_file.read_bytes()
        assert renewed != first_serving
        assert secret_value(kube_emulator, "tls.crt") == renewed
        assert changes[-1].ca_bundle == files.ca_bundle
        # The running server now hands out the renewed certificate (no restart).
        assert await served_certificate(port) == x509.load_pem_x509_certificate(renewed)
        verify_for(SERVICE_HOST, renewed, files.ca_bundle, clock.now)

        # A third of the CA's life left: a new CA joins the bundle first, still serving the old chain...
        clock.now = T0 + dt.timedelta(days=2450)
        await manager.ensure()
        published = changes[-1]
        assert len(bundle_certificates(published.ca_bundle)) == 2
        assert registered_bundle(kube_emulator) == published.ca_bundle
        old_ca = bundle_certificates(files.ca_bundle)[0]
        assert x509.load_pem_x509_certificate(published.cert_file.read_bytes()).issuer == old_ca.subject

        # ...and signs once every replica had time to trust it; the old CA stays in the bundle.
        clock.now += RenewalPolicy().ca_publish_delay
        await manager.ensure()
        rotated = changes[-1]
        issuer = x509.load_pem_x509_certificate(rotated.cert_file.read_bytes()).issuer
        assert issuer != old_ca.subject
        assert old_ca in bundle_certificates(rotated.ca_bundle)
        assert registered_bundle(kube_emulator) == rotated.ca_bundle
        verify_for(SERVICE_HOST, rotated.cert_file.read_bytes(), rotated.ca_bundle, clock.now)
        assert await served_certificate(port) == x509.load_pem_x509_certificate(rotated.cert_file.read_bytes())


async def test_a_replica_picks_up_another_replicas_renewal(kube_emulator, kube_api_client, tmp_path):
    seen: list[ServingFiles] = []

    async def on_change(files: ServingFiles) -> None:
        seen.append(files)

    clock = Clock(T0)
    follower = make_manager(kube_api_client, tmp_path, clock, work="follower", on_change=on_change)
    await follower.ensure()
    clock.now = T0 + dt.timedelta(days=250)
    renewer = make_manager(kube_api_client, tmp_path, clock, work="renewer")
    renewed = await renewer.ensure()

    await follower.ensure()
    assert len(seen) == 1
    assert seen[0].cert_file.read_bytes() == renewed.cert_file.read_bytes()

    # A CA rotation started elsewhere is visible to the follower's reconciler before its next round.
    clock.now = T0 + dt.timedelta(days=2450)
    rotating = await renewer.ensure()
    assert len(bundle_certificates(rotating.ca_bundle)) == 2
    assert await follower.read_ca_bundle() == rotating.ca_bundle
    assert len(bundle_certificates(follower.current.ca_bundle)) == 1


async def test_an_unusable_secret_is_replaced_and_the_reason_logged(kube_emulator, kube_api_client, tmp_path, caplog):
    put_object(kube_emulator, SECRETS, "gatewatch", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gatewatch-tls", "namespace": "gatewatch"},
        "data": {"tls.crt": base64.b64encode(b"not a certificate").decode(), "tls.key": "", "ca.crt": "", "ca.key": ""},
    })
    files = await make_manager(kube_api_client, tmp_path, Clock(T0)).ensure()
    verify_for(SERVICE_HOST, files.cert_file.read_bytes(), files.ca_bundle, T0)
    assert secret_value(kube_emulator, "tls.crt") == files.cert_file.read_bytes()
    assert any("secret gatewatch/gatewatch-tls" in r.getMessage() and "'ca.crt' is missing" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")


async def test_a_placeholder_secret_from_the_chart_is_filled_keeping_its_type_and_annotations(
        kube_emulator, kube_api_client, tmp_path):
    put_object(kube_emulator, SECRETS, "gatewatch", {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "gatewatch-tls", "namespace": "gatewatch",
                     "annotations": {"helm.sh/resource-policy": "keep"}},
    })
    files = await make_manager(kube_api_client, tmp_path, Clock(T0)).ensure()
    secret = read_object(kube_emulator, SECRETS, "gatewatch", "gatewatch-tls")
    assert secret["type"] == "Opaque"  # immutable in Kubernetes: replacing it would be rejected
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert secret_value(kube_emulator, "tls.crt") == files.cert_file.read_bytes()


# --- user-supplied files ------------------------------------------------------------------------


def write_user_files(directory, *, now=T0):
    ca = generate_ca(now=now)
    serving = issue_serving_certificate(ca=ca, names=NAMES, now=now)
    directory.mkdir(exist_ok=True)
    (directory / "tls.crt").write_bytes(serving.cert_pem)
    (directory / "tls.key").write_bytes(serving.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return ca, serving


async def test_user_supplied_files_are_used_and_their_changes_reported(tmp_path):
    directory = tmp_path / "tls"
    ca, serving = write_user_files(directory)
    seen: list[ServingFiles] = []

    async def on_change(files: ServingFiles) -> None:
        seen.append(files)

    source = FileCertificateSource(cert_file=directory / "tls.crt", key_file=directory / "tls.key",
                                   ca_file=directory / "ca.crt", on_change=on_change)
    files = await source.ensure()
    assert files.ca_bundle == ca.cert_pem
    await source.ensure()
    assert seen == []  # unchanged files: nothing to reload

    _, new_serving = write_user_files(directory)  # cert-manager renewed them
    await source.ensure()
    assert len(seen) == 1 and seen[0].cert_file.read_bytes() == new_serving.cert_pem


async def test_user_files_that_do_not_belong_together_are_an_error_naming_them(tmp_path):
    directory = tmp_path / "tls"
    write_user_files(directory)
    other = issue_serving_certificate(ca=generate_ca(now=T0), names=NAMES, now=T0)
    (directory / "tls.key").write_bytes(other.key_pem)
    source = FileCertificateSource(cert_file=directory / "tls.crt", key_file=directory / "tls.key",
                                   ca_file=directory / "ca.crt")
    with pytest.raises(CertificateError, match="tls.crt.*tls.key.*does not belong"):
        await source.ensure()
    with pytest.raises(CertificateError, match="missing.crt"):
        await FileCertificateSource(cert_file=directory / "missing.crt", key_file=directory / "tls.key",
                                    ca_file=directory / "ca.crt").ensure()


# --- client authentication (webhook.clientCA) ---------------------------------------------------


def issue_client_certificate(*, ca: KeyPair, common_name: str, now: dt.datetime) -> KeyPair:
    """What an AdmissionConfiguration kubeconfig names as the API server's webhook client certificate."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return KeyPair(cert_pem=certificate.public_bytes(serialization.Encoding.PEM), key_pem=key_pem)


def client_context(files: ServingFiles, tmp_path, client: KeyPair | None) -> ssl.SSLContext:
    """A TLS client trusting the webhook's CA bundle, presenting ``client`` if given."""
    context = ssl.create_default_context(cadata=files.ca_bundle.decode())
    if client is not None:
        cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
        cert_file.write_bytes(client.cert_pem)
        key_file.write_bytes(client.key_pem)
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


async def post_review(port: int, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"https://127.0.0.1:{port}/validate/pods", json=REVIEW,
                                ssl=context, server_hostname=SERVICE_HOST) as response:
            return response.status


async def test_with_a_client_ca_only_clients_with_a_certificate_it_signed_are_served(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)  # OpenSSL checks validity against the real clock
    write_user_files(tmp_path / "tls", now=now)
    files = await FileCertificateSource(cert_file=tmp_path / "tls" / "tls.crt", key_file=tmp_path / "tls" / "tls.key",
                                        ca_file=tmp_path / "tls" / "ca.crt").ensure()
    client_ca = generate_ca(now=now, common_name="apiserver webhook clients")
    (tmp_path / "client-ca.crt").write_bytes(client_ca.cert_pem)
    apiserver = issue_client_certificate(ca=client_ca, common_name="kube-apiserver", now=now)
    # Signed by another CA (here the webhook's own serving CA): not the API server.
    impostor = issue_client_certificate(ca=generate_ca(now=now), common_name="kube-apiserver", now=now)

    context = server_ssl_context(files, client_ca=tmp_path / "client-ca.crt")
    assert context.verify_mode == ssl.CERT_REQUIRED
    async with running_kopf_server(files, context) as port:
        assert await post_review(port, client_context(files, tmp_path, apiserver)) == 200
        for client in (None, impostor):
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                await post_review(port, client_context(files, tmp_path, client))
        # A renewal reloads the serving certificate and keeps requiring client certificates.
        reload_server_ssl_context(context, files)
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await post_review(port, client_context(files, tmp_path, None))
        assert await post_review(port, client_context(files, tmp_path, apiserver)) == 200


async def test_without_a_client_ca_any_tls_client_is_served(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    write_user_files(tmp_path / "tls", now=now)
    files = await FileCertificateSource(cert_file=tmp_path / "tls" / "tls.crt", key_file=tmp_path / "tls" / "tls.key",
                                        ca_file=tmp_path / "tls" / "ca.crt").ensure()
    context = server_ssl_context(files)
    assert context.verify_mode == ssl.CERT_NONE
    async with running_kopf_server(files, context) as port:
        assert await post_review(port, client_context(files, tmp_path, None)) == 200


@pytest.mark.parametrize(("content", "reason"), [(None, "cannot read"), (b"not a certificate", "not a PEM CA bundle")])
async def test_an_unusable_client_ca_is_an_error_naming_the_file(tmp_path, content, reason):
    write_user_files(tmp_path / "tls")
    files = await FileCertificateSource(cert_file=tmp_path / "tls" / "tls.crt", key_file=tmp_path / "tls" / "tls.key",
                                        ca_file=tmp_path / "tls" / "ca.crt").ensure()
    path = tmp_path / "client-ca.crt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CertificateError, match=f"client-ca.crt.*{reason}"):
        server_ssl_context(files, client_ca=path)


# --- helpers ------------------------------------------------------------------------------------

REVIEW = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "u-1", "operation": "CREATE", "namespace": "default", "name": "p",
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}},
}


class running_kopf_server:
    """kopf's own WebhookServer on 127.0.0.1 with gatewatch's TLS options, consumed the way kopf does.

    Yields the port; ``client_configs`` counts (re)starts of the listener.
    """

    def __init__(self, files: ServingFiles, context: ssl.SSLContext) -> None:
        self.server = kopf.WebhookServer(addr="127.0.0.1", host="127.0.0.1", path="/validate",
                                         **kopf_server_tls_options(files, context))
        self.client_configs: list[dict] = []
        self.serving = asyncio.Event()

    async def __aenter__(self) -> int:
        async def answer(review, **_):
            return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": review["request"]["uid"], "allowed": True}}

        async def consume() -> None:
            async for client_config in self.server(answer):
                self.client_configs.append(client_config)
                self.serving.set()

        self.task = asyncio.create_task(consume())
        await asyncio.wait_for(self.serving.wait(), timeout=10)
        return int(self.client_configs[0]["url"].rsplit(":", 1)[1].split("/")[0])

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        assert len(self.client_configs) == 1, "the listener restarted"


async def served_certificate(port: int) -> x509.Certificate:
    """What the server hands out now, unverified (certificates dated by an injected clock)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return await _handshake(port, context)


async def peer_certificate(port: int, *, trust: bytes) -> x509.Certificate:
    """The server's certificate, verified for SERVICE_HOST by a client trusting only ``trust``."""
    return await _handshake(port, ssl.create_default_context(cadata=trust.decode()))


async def _handshake(port: int, context: ssl.SSLContext) -> x509.Certificate:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=SERVICE_HOST)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
    return x509.load_der_x509_certificate(der)


def registered_bundle(emulator) -> bytes:
    configuration = read_object(emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")
    bundles = {webhook["clientConfig"]["caBundle"] for webhook in configuration["webhooks"]}
    (bundle,) = bundles
    return base64.b64decode(bundle)


async def test_an_api_refusal_is_an_error_naming_the_secret(kube_emulator, kube_api_client, tmp_path):
    def forbidden():
        raise kmock.KubernetesError(status=403, reason="Forbidden",
                                    message='secrets "gatewatch-tls" is forbidden: no RBAC rule')

    kube_emulator["get /api/v1/namespaces/gatewatch/secrets/gatewatch-tls"] << forbidden
    with pytest.raises(KubernetesApiError) as caught:
        await make_manager(kube_api_client, tmp_path, Clock(T0)).ensure()
    assert str(caught.value) == (
        'read secret gatewatch/gatewatch-tls: 403 Forbidden: secrets "gatewatch-tls" is forbidden: no RBAC rule')
