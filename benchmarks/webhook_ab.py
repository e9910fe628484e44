"""The webhook server's CPU time per review: this working tree against an earlier revision, alternately.

    python benchmarks/webhook_ab.py --against a07b677 [--pairs 12] [--reviews 3000]

For a change to the review path when the machine is too busy for
webhook_throughput.py's ratio: both servers run in turn on the same machine,
each in a process of its own (``GuardedWebhookServer`` as imported from
``gatewatch.controller`` in either revision, the rules `gatewatch run` serves by
default (packaged rules and the pod-security-baseline pack), warn mode,
the namespace and pod lookups answered from memory), and get the same
webhook_throughput.py mix over 16 keep-alive HTTPS connections from this
process. The figure is the server process's CPU time (user + system, from
/proc) per review after a warm-up, so time the server spends waiting for the
CPU does not count; each pair is printed, then the medians and the median of the
pairs' ratios (each pair ran back to back: the steadier figure on a busy machine).
The earlier revision's ``operator/`` and ``rules.yaml`` come from ``git archive``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from webhook_serving import write_tls_files  # noqa: E402
from webhook_servers import archived_operator  # noqa: E402
from webhook_throughput import REVIEW_MIX, admission_review  # noqa: E402

HANDLER_FOR = {"pod-busybox": "pods", "pod-nginx": "pods", "exec": "pods-exec"}
SERVER = r'''
import asyncio, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
from gatewatch.admission import AdmissionReviewer
from gatewatch.config import Settings
from gatewatch.controller import GuardedWebhookServer
from gatewatch.decision import Mode
from gatewatch.engine import RuleEngine
from gatewatch.kube.certificates import FileCertificateSource, kopf_server_tls_options, server_ssl_context
from gatewatch.kube.namespaces import NamespaceModeResolver
from gatewatch.kube.pods import PodLookup
from gatewatch.metrics import Metrics
from gatewatch.controller import rules_loader
from gatewatch.rules.loader import default_rules_path

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "bench", "uid": "uid-web", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "c0", "image": "nginx:1.27"}]}}

async def labels(namespace): return {}
async def pod(key): return POD

async def main():
    tls = Path(sys.argv[1])
    files = await FileCertificateSource(cert_file=tls / "tls.crt", key_file=tls / "tls.key",
                                        ca_file=tls / "ca.crt").ensure()
    metrics = Metrics()
    reviewer = AdmissionReviewer(
        engine=RuleEngine(rules_loader(Settings())([default_rules_path()])), metrics=metrics, pod_lookup=PodLookup(pod, cache_ttl=60),
        namespace_modes=NamespaceModeResolver(Settings(mode=Mode.WARN), fetch_labels=labels, cache_ttl=60))
    server = GuardedWebhookServer(reviewer=reviewer, metrics=metrics, addr="127.0.0.1", port=None,
                                  path="/validate", **kopf_server_tls_options(files, server_ssl_context(files)))
    async for config in server(None):
        print("READY", str(config["url"]).split(":")[2].split("/")[0], flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
'''


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send(port: int, context: ssl.SSLContext, bodies: list[tuple[str, bytes]], count: int) -> None:
    pending = list(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        async def client() -> None:
            while pending:
                handler, body = bodies[pending.pop() % len(bodies)]
                async with session.post(f"https://127.0.0.1:{port}/validate/{handler}", data=body,
                                        ssl=context) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")

        await asyncio.gather(*(client() for _ in range(16)))


def server_cpu_per_review(operator_dir: Path, tls_dir: Path, context: ssl.SSLContext,
                          bodies: list[tuple[str, bytes]], reviews: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(operator_dir)}
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(tls_dir)], stdout=subprocess.PIPE, text=True,
                               env=env)
    try:
        port = int((process.stdout.readline() if process.stdout else "").split()[1])
        asyncio.run(send(port, context, bodies, reviews // 5))  # warm-up
        before = cpu_seconds(process.pid)
        asyncio.run(send(port, context, bodies, reviews))
        return (cpu_seconds(process.pid) - before) / reviews * 1000
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the earlier revision (a commit or branch)")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--reviews", type=int, default=3000, help="measured reviews per server per pair")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        earlier = archived_operator(args.against, Path(work) / "earlier")
        tls_dir = Path(work) / "tls"
        write_tls_files(tls_dir)
        context = ssl.create_default_context(cadata=(tls_dir / "ca.crt").read_text())
        bodies = [(HANDLER_FOR[kind], json.dumps(admission_review(kind, index=index)).encode())
                  for index in range(30) for kind in REVIEW_MIX]
        servers = {args.against: earlier, "this tree": REPO / "operator"}
        figures: dict[str, list[float]] = {name: [] for name in servers}
        print(f"server CPU ms per review, {args.reviews:,} reviews per server per pair; "
              f"load average {os.getloadavg()[0]:.1f}")
        for pair in range(args.pairs):
            for name, operator_dir in servers.items():
                figures[name].append(server_cpu_per_review(operator_dir, tls_dir, context, bodies, args.reviews))
            print(f"  pair {pair + 1:>2}: " + "  ".join(f"{name} {values[-1]:.3f}" for name, values in figures.items()),
                  flush=True)
        medians = {name: statistics.median(values) for name, values in figures.items()}
        # Each pair ran back to back: the median of their ratios is the steadier figure on a busy machine.
        pair_ratio = statistics.median(new / old for old, new in zip(figures[args.against], figures["this tree"]))
        print("median: " + "  ".join(f"{name} {value:.3f}" for name, value in medians.items())
              + f"  ratio {medians['this tree'] / medians[args.against]:.3f}; median of the pairs' ratios "
              f"{pair_ratio:.3f}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
