"""webhook.clientCA end to end: gatewatch serves only an API server presenting a certificate that CA signed.

The operator runs as `gatewatch run` would (tests/test_operator_admission.py's running
cluster); the harness plays kube-apiserver, once without a client certificate (what
every cluster does until its AdmissionConfiguration names one), once with it.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from test_kube_certificates import issue_client_certificate
from test_operator_admission import WEBHOOK_TIMEOUT_SECONDS, create_pod, eventually, running_cluster
from gatewatch.kube.certificates import generate_ca


def client_files(tmp_path: Path, *, ca_name: str) -> tuple[Path, tuple[Path, Path]]:
    """A client CA bundle file and a (cert, key) pair it signed, as the API server's webhook client."""
    now = dt.datetime.now(dt.timezone.utc)  # OpenSSL checks validity against the real clock
    ca = generate_ca(now=now, common_name=ca_name)
    client = issue_client_certificate(ca=ca, common_name="kube-apiserver", now=now)
    ca_file = tmp_path / f"{ca_name}.crt"
    ca_file.write_bytes(ca.cert_pem)
    cert_file, key_file = tmp_path / f"{ca_name}-client.crt", tmp_path / f"{ca_name}-client.key"
    cert_file.write_bytes(client.cert_pem)
    key_file.write_bytes(client.key_pem)
    return ca_file, (cert_file, key_file)


async def test_with_a_client_ca_only_the_api_server_holding_its_certificate_is_answered(tmp_path: Path):
    client_ca, apiserver_certificate = client_files(tmp_path, ca_name="webhook-clients")
    _, stranger_certificate = client_files(tmp_path, ca_name="someone-else")
    busybox = create_pod("shell", "busybox:1.36", namespace="warn-ns")
    async with running_cluster(tmp_path, webhook={"failurePolicy": "Fail", "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
                                                  "clientCA": str(client_ca)}) as cluster:
        answered = await cluster.harness(client_certificate=apiserver_certificate).admit(busybox)
        assert answered.allowed and answered.warnings == ["gatewatch: [T1610] Pod Created From A Debug Image (low)"]
        await eventually(lambda: cluster.alert_lines(), what="alert")

        for certificate in (None, stranger_certificate):
            refused = await cluster.harness(client_certificate=certificate).admit(busybox)
            # The TLS handshake fails: nothing evaluated, nothing recorded; failurePolicy Fail decides.
            assert (refused.allowed, refused.code) == (False, 500)
            assert "failed calling webhook" in refused.message
        assert len(cluster.alert_lines()) == 1  # only the authenticated review left a trace
