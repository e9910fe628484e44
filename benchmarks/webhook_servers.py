"""The two admission servers `webhook_throughput.py` compares, each run in a process of its own.

    python benchmarks/webhook_servers.py emulator
    python benchmarks/webhook_servers.py {baseline|gatewatch} --tls-dir DIR --api-url URL [--mode warn]
                                         [--rules-file FILE]

- ``baseline``: a kopf operator whose only handler is a no-op ``@kopf.on.validate``
  for pods and every pods subresource, served by kopf's own HTTPS ``WebhookServer``.
- ``gatewatch``: ``gatewatch.controller.Operator``, what ``gatewatch run`` starts:
  the packaged default rules, the given mode, Events and alerts queued as in
  production (alerts written to /dev/null, Events posted to the emulator);
  with ``--rules-file``, that file's rules instead of the packaged ones.

- ``emulator``: their Kubernetes API, a kmock KubernetesEmulator on 127.0.0.1.

Both servers use the certificate in ``--tls-dir`` (made here with ``cryptography``).
Once listening, each process prints ``READY <port>`` on stdout; it stops when
stdin closes (the load generator is done) or after ``--lifetime`` seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import ipaddress
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import traceback
import urllib.parse
from pathlib import Path
from typing import Any, AsyncIterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "/validate"
BENCH_NAMESPACE = "bench"  # no gatewatch.io/mode label: the configured default mode applies
EXEC_TARGET_POD = "web"  # exists in the emulator, so gatewatch's pod lookup succeeds (and is cached)
BASELINE_HANDLER_ID = "pods"
KEPT_REQUESTS = 16  # the emulator's request record: the benchmark asserts nothing on it


# --- an earlier revision, for a before/after in one run ----------------------------------------


def archived_operator(revision: str, into: Path) -> Path:
    """``operator/`` of ``revision`` (and the packaged rules) from ``git archive``, under ``into``:
    a PYTHONPATH entry whose ``gatewatch`` is that revision's."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "operator", "rules.yaml"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)
    packaged = into / "operator" / "gatewatch" / "data" / "rules.yaml"
    if packaged.is_symlink() or not packaged.exists():  # a link to the top-level rules.yaml
        packaged.unlink(missing_ok=True)
        packaged.write_bytes((into / "rules.yaml").read_bytes())
    return into / "operator"


# --- TLS material ------------------------------------------------------------------------------


def write_tls_files(directory: Path) -> None:
    """A CA and a serving certificate for 127.0.0.1 (ECDSA P-256, as gatewatch's self-managed mode)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatewatch benchmark CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatewatch.gatewatch.svc")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
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


# --- the Kubernetes API: the tests' KubeEmulator, in a process of its own ------------------------


def run_emulator(*, stop: threading.Event) -> None:
    """tests/kube_emulator.KubeEmulator (kmock plus the namespace-path fixes gatewatch needs).

    Seeded with the benchmark namespace and the pod the exec reviews target. In a
    process of its own: the API server's work (e.g. storing gatewatch's Events)
    is not the webhook server's CPU time.
    """
    sys.path.insert(0, str(REPO / "tests"))
    import kmock
    from apiserver_harness import add_namespace, add_pod
    from kube_emulator import KubeEmulator

    async def serve() -> None:
        async with KubeEmulator(history_limit=KEPT_REQUESTS) as k8s, kmock.Server(k8s):
            for name in (BENCH_NAMESPACE, "gatewatch", "kube-system"):
                add_namespace(k8s, name)
            add_pod(k8s, BENCH_NAMESPACE, EXEC_TARGET_POD, images=["nginx:1.27"], labels={"app": "web"})
            announce_ready(int(urllib.parse.urlsplit(str(k8s.url)).port or 0))
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(serve())


# --- the servers --------------------------------------------------------------------------------


def _port_of(client_config: Any) -> int:
    port = urllib.parse.urlsplit(str(client_config.get("url"))).port
    if port is None:
        raise RuntimeError(f"kopf reported no port in {client_config!r}")
    return port


def announce_ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def run_baseline(*, tls_dir: Path, api_url: str, stop: threading.Event) -> None:
    """kopf with one async no-op validating handler: the cost of kopf's admission path alone."""
    import kopf

    class AnnouncingWebhookServer(kopf.WebhookServer):
        async def __call__(self, fn: Any) -> AsyncIterator[Any]:
            async for client_config in super().__call__(fn):
                announce_ready(_port_of(client_config))
                yield client_config

    registry = kopf.OperatorRegistry()

    # subresource='*': the handler runs for pods/exec too, as gatewatch's does.
    @kopf.on.validate("", "v1", "pods", id=BASELINE_HANDLER_ID, subresource="*", registry=registry)
    async def noop(**_: Any) -> None:
        return None

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=api_url, insecure=True)

    settings = kopf.OperatorSettings()
    settings.admission.server = AnnouncingWebhookServer(
        addr="127.0.0.1", port=None, path=WEBHOOK_PATH,
        certfile=str(tls_dir / "tls.crt"), pkeyfile=str(tls_dir / "tls.key"),
        cadata=(tls_dir / "ca.crt").read_bytes(),
    )
    # The same kopf settings gatewatch uses (controller.kopf_settings), so only the handler differs.
    settings.admission.managed = None
    settings.posting.enabled = False
    settings.scanning.disabled = True
    asyncio.run(kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True,
                              stop_flag=stop))


def run_gatewatch(
    *, tls_dir: Path, api_url: str, stop: threading.Event, mode: str, work_dir: Path, profile: Path | None = None,
    rules_file: Path | None = None,
) -> None:
    """gatewatch.controller.Operator as `gatewatch run` starts it, with the packaged default rules
    (or only ``rules_file``'s)."""
    from gatewatch.config import load_settings
    from gatewatch.controller import Operator
    import kubernetes.client

    config = {
        "mode": mode,
        "namespace": "gatewatch",
        "server": {"host": "127.0.0.1", "port": 0, "metricsPort": 0},
        "certificates": {
            "mode": "files", "certFile": str(tls_dir / "tls.crt"), "keyFile": str(tls_dir / "tls.key"),
            "caFile": str(tls_dir / "ca.crt"),
        },
    }
    if rules_file is not None:
        config["rules"] = {"files": [str(rules_file)], "packaged": False}
    config_file = work_dir / f"gatewatch-config-{os.getpid()}.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    settings = load_settings(config_file=config_file, environ={})
    configuration = kubernetes.client.Configuration()
    configuration.host = api_url
    alerts = open(os.devnull, "w")  # alerts are built and queued as in production, then discarded
    operator = Operator(settings, api_client=kubernetes.client.ApiClient(configuration), alert_stream=alerts)

    def wait_until_ready() -> None:
        while not stop.is_set():
            if operator.readiness.ready and operator.webhook_port:
                announce_ready(operator.webhook_port)
                return
            stop.wait(0.05)

    threading.Thread(target=wait_until_ready, name="ready", daemon=True).start()
    profiler = None
    if profile is not None:  # the event loop's thread only: the worker threads' writes are not in it
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(operator.run(stop_flag=stop))
    finally:
        alerts.close()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))


def _stop_on_stdin_eof(stop: threading.Event) -> None:
    # The load generator closes our stdin when it is done (or dies).
    sys.stdin.read()
    stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["emulator", "baseline", "gatewatch"])
    parser.add_argument("--api-url", help="the emulator's URL (baseline, gatewatch)")
    parser.add_argument("--tls-dir", type=Path, help="holds tls.crt, tls.key, ca.crt (baseline, gatewatch)")
    parser.add_argument("--mode", default="warn", choices=["audit", "warn", "enforce"], help="gatewatch's mode")
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds regardless")
    parser.add_argument("--profile", type=Path, help="gatewatch: write cProfile stats of its event loop here")
    parser.add_argument("--rules-file", type=Path, help="gatewatch: serve with this file's rules, not the packaged ones")
    args = parser.parse_args()
    if args.server != "emulator" and (args.tls_dir is None or args.api_url is None):
        parser.error(f"{args.server} needs --tls-dir and --api-url")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    threading.Thread(target=_stop_on_stdin_eof, args=(stop,), name="stdin", daemon=True).start()
    threading.Timer(args.lifetime, stop.set).start()
    exit_code = 0
    try:
        if args.server == "emulator":
            run_emulator(stop=stop)
        elif args.server == "baseline":
            run_baseline(tls_dir=args.tls_dir, api_url=args.api_url, stop=stop)
        else:
            run_gatewatch(tls_dir=args.tls_dir, api_url=args.api_url, stop=stop, mode=args.mode,
                          work_dir=args.tls_dir.parent, profile=args.profile, rules_file=args.rules_file)
    except BaseException:
        traceback.print_exc()
        exit_code = 1
    finally:
        stop.set()
        sys.stdout.flush()
        os._exit(exit_code)  # the lifetime timer and the stdin reader are not joinable


if __name__ == "__main__":
    main()
