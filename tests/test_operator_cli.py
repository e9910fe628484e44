"""`gatewatch run` and `gatewatch uninstall-webhook` as a user invokes them."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
import pytest
from click.testing import CliRunner

from apiserver_harness import ApiRequest, ApiServerHarness, add_namespace, namespace_labels
from gatewatch.cli import main
from gatewatch.config import load_settings
from gatewatch.errors import ConfigError
from kube_emulator import (  # noqa: F401  (fixtures)
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    KubeEmulator,
    kube_emulator,
    put_object,
    read_object,
)


def kubeconfig_for(server: str, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{server}"}}}}]
users: [{{name: test, user: {{token: t0ken}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
""")
    return path


def test_run_rejects_a_bad_config_naming_file_line_and_key(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("mode: warn\nwebhook:\n  failurePolicy: Sometimes\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}: line 3: webhook.failurePolicy" in result.output


def test_run_with_a_broken_rule_file_says_which_file_line_and_rule(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nruleset: mine\nrules:\n  - id: r1\n    name: x\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"rules: {{files: [{rules}], packaged: false}}\n")
    kubeconfig = kubeconfig_for("http://127.0.0.1:9", tmp_path)  # never reached: rules come first
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert f"{rules}:4" in result.output and "'r1'" in result.output


def test_run_with_an_unreadable_kubeconfig_is_a_clear_error(tmp_path: Path):
    result = CliRunner().invoke(main, ["run", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "kubeconfig" in result.output


def test_run_help_lists_the_documented_flags():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for flag in ("--config", "--kubeconfig", "--mode", "--failure-policy", "--timeout-seconds", "--webhook-url",
                 "--metrics-port", "--rules"):
        assert flag in result.output


def test_the_timeout_range_run_help_advertises_is_the_one_gatewatch_and_the_chart_accept(tmp_path: Path):
    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    low, high = map(int, re.search(r"--timeout-seconds INTEGER RANGE .*?\[(\d+)<=x<=(\d+)\]", help_text).groups())
    for value, accepted in ((low - 1, False), (low, True), (high, True), (high + 1, False)):
        # Past the flag's check, load_settings validates the same key from the config file.
        config = tmp_path / "config.yaml"
        config.write_text(f"webhook: {{timeoutSeconds: {value}}}\n")
        try:
            load_settings(config_file=config)
        except ConfigError:
            assert not accepted, value
        else:
            assert accepted, value
        result = CliRunner().invoke(main, ["run", "--timeout-seconds", str(value), "--kubeconfig",
                                           str(tmp_path / "missing")])
        assert result.exit_code == 2
        assert ("--timeout-seconds" in result.output) is not accepted, result.output
    schema = json.loads((Path(__file__).parents[1] / "charts/gatewatch/values.schema.json").read_text())
    timeout = schema["properties"]["webhook"]["properties"]["timeoutSeconds"]
    assert (timeout["minimum"], timeout["maximum"]) == (low, high)


async def test_uninstall_webhook_deletes_the_configuration(kube_emulator: KubeEmulator, tmp_path: Path):
    put_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gatewatch"}, "webhooks": [],
    })
    kubeconfig = kubeconfig_for(str(kube_emulator.url).rstrip("/"), tmp_path)
    args = ["uninstall-webhook", "--kubeconfig", str(kubeconfig)]
    # The command blocks on the Kubernetes client: run it off the loop the emulator serves on.
    first = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert first.exit_code == 0, first.output
    assert "deleted ValidatingWebhookConfiguration gatewatch" in first.output
    assert read_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch") is None
    second = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert second.exit_code == 0 and "nothing to delete" in second.output


DEBUG_IMAGE_RULE = """\
version: 1
ruleset: dev
rules:
  - id: debug-image
    name: Debug image
    description: A pod runs busybox.
    severity: low
    risk_score: 21
    action: warn
    query: kubernetes.audit.requestObject.spec.containers.image:busybox*
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_run_in_local_development_mode_serves_until_sigterm(kube_emulator: KubeEmulator, tmp_path: Path):
    """`gatewatch run` as a process, with clientConfig.url (no Service), as docs/operations.md shows."""
    add_namespace(kube_emulator, "gatewatch")
    add_namespace(kube_emulator, "dev", {"gatewatch.io/mode": "warn"})
    port, metrics_port = free_port(), free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text(DEBUG_IMAGE_RULE)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "namespace": "gatewatch",
        "certificates": {"mode": "self-managed", "workDir": str(tmp_path / "tls")},
        "rules": {"files": [str(rules)], "packaged": False},
    }))
    kubeconfig = kubeconfig_for(str(kube_emulator.url).rstrip("/"), tmp_path)
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gatewatch"), "run", "--config", str(config), "--kubeconfig", str(kubeconfig),
        "--webhook-url", f"https://127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:
            # Generous: starting a process is slow on a loaded machine; only a hang should fail here.
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{metrics_port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert process.returncode is None, (await process.stderr.read()).decode()
                assert asyncio.get_running_loop().time() < deadline, "gatewatch run never became ready"
                await asyncio.sleep(0.05)
        configuration = read_object(kube_emulator, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")
        urls = [webhook["clientConfig"]["url"] for webhook in configuration["webhooks"]]
        base = f"https://127.0.0.1:{port}/validate"
        assert urls[:2] == [f"{base}/pods/enforce", f"{base}/pods/warn"]
        harness = ApiServerHarness(configuration, namespace_labels=namespace_labels(kube_emulator))
        result = await harness.admit(ApiRequest(
            operation="CREATE", resource="pods", namespace="dev", name="shell",
            object={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell", "namespace": "dev"},
                    "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}},
        ))
        assert result.allowed and not result.failures, result
        assert result.warnings == ["gatewatch: [no ATT&CK id] Debug image (low)"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, stderr.decode()
    # Alerts are the only thing on stdout (logs go to stderr), written out before exiting.
    lines = stdout.decode().splitlines()
    assert len(lines) == 1, stderr.decode()
    (line,) = lines
    alert = json.loads(line)
    assert alert["rule"]["id"] == "debug-image" and alert["orchestrator"]["namespace"] == "dev"


# --- start-up errors: exit status 2 and one line naming the problem (docs/operations.md) ------------


class AuthenticatingEmulator(KubeEmulator):
    """kube-apiserver's authentication and authorization in front of the emulator.

    ``users`` maps bearer tokens to user names: any other token gets 401 on every
    request. ``forbidden`` holds the (user, resource) pairs RBAC does not allow: 403.
    The bodies are the API server's Status objects.
    """

    users: dict[str, str]
    forbidden: set[tuple[str, str]]

    async def _handle(self, request: Any) -> Any:
        authorization = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        user = self.users.get(authorization.removeprefix("Bearer "))
        if user is None:
            return api_status(401, "Unauthorized", "Unauthorized")
        plural = request.resource.plural if request.resource is not None else ""
        if (user, plural) in self.forbidden:
            verb = "get" if request.method == kmock.method.GET else str(request.method).lower()
            return api_status(403, "Forbidden", f'{plural} "{request.name}" is forbidden: User "{user}" cannot '
                                                f'{verb} resource "{plural}" in API group "" in the namespace '
                                                f'"{request.name}"')
        return await super()._handle(request)


def api_status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


async def gatewatch_run(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    """`gatewatch run` as a process: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gatewatch"), "run", "--kubeconfig", str(kubeconfig),
        "--namespace", "gatewatch", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, stdout.decode(), stderr.decode()


def the_one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("gatewatch: ")
    return lines[0]


async def test_run_against_an_unreachable_api_server_is_one_line_and_exit_2(tmp_path: Path):
    closed = free_port()  # bound and released: nothing listens there
    status, stdout, stderr = await gatewatch_run(kubeconfig_for(f"http://127.0.0.1:{closed}", tmp_path))
    assert status == 2 and stdout == ""
    line = the_one_line(stderr)
    assert f"cannot reach the API server at http://127.0.0.1:{closed}" in line
    assert "Connection refused" in line


@pytest.mark.parametrize(("users", "forbidden", "expected"), [
    pytest.param({"an0ther": "alice"}, set(), ["401 Unauthorized", "rejected gatewatch's credentials (token or client certificate"],
                 id="token rejected"),
    pytest.param({"t0ken": "system:serviceaccount:gatewatch:gatewatch"},
                 {("system:serviceaccount:gatewatch:gatewatch", "namespaces")},
                 ["403 Forbidden", 'User "system:serviceaccount:gatewatch:gatewatch" cannot get resource '
                                   '"namespaces"', "gatewatch's RBAC must allow it"],
                 id="RBAC forbids it"),
])
async def test_run_with_credentials_the_api_server_refuses_is_one_line_and_exit_2(
        tmp_path: Path, users: dict[str, str], forbidden: set[tuple[str, str]], expected: list[str]):
    async with AuthenticatingEmulator() as k8s, kmock.Server(k8s):
        k8s.users, k8s.forbidden = users, forbidden
        add_namespace(k8s, "gatewatch")
        status, stdout, stderr = await gatewatch_run(kubeconfig_for(str(k8s.url).rstrip("/"), tmp_path))
        writes = [r for r in k8s if r.method != kmock.method.GET]
    assert status == 2 and stdout == ""
    line = the_one_line(stderr)
    assert line.startswith("gatewatch: get namespace gatewatch: ")
    for words in expected:
        assert words in line
    assert writes == []  # stopped before touching anything


async def test_run_in_a_namespace_that_does_not_exist_is_one_line_and_exit_2(
        kube_emulator: KubeEmulator, tmp_path: Path):
    add_namespace(kube_emulator, "elsewhere")
    status, stdout, stderr = await gatewatch_run(kubeconfig_for(str(kube_emulator.url).rstrip("/"), tmp_path))
    assert status == 2 and stdout == ""
    line = the_one_line(stderr)
    assert line.startswith("gatewatch: get namespace gatewatch: 404 ")
    assert "there is no namespace gatewatch at http://127.0.0.1:" in line
    assert "(gatewatch's own namespace: namespace, --namespace, GATEWATCH_NAMESPACE)" in line
    assert read_object(kube_emulator, "v1/secrets", "gatewatch", "gatewatch-tls") is None  # nothing written
