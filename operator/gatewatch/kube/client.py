"""The one place a ``kubernetes.client.ApiClient`` is built, shared by every kube module.

In a Pod (``KUBERNETES_SERVICE_HOST`` set and no kubeconfig asked for) the
service account is used; otherwise a kubeconfig: ``kubeconfig`` if given, else
``$KUBECONFIG``, else ``~/.kube/config``, with its current context or ``context``.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import kubernetes.client
import kubernetes.config
import urllib3

from gatewatch.errors import ConfigError, KubernetesApiError
from gatewatch.kube import rest

IN_CLUSTER_VARIABLE = "KUBERNETES_SERVICE_HOST"
# How long the start-up check waits for the API server (a dropped connection, not a refused one).
STARTUP_CHECK_TIMEOUT = 10.0
_CONNECTION_REPR = re.compile(r"^\w*Connection(?:Pool)?\(host=[^)]*\): ")
# The bound on one API call of a background task (``_request_timeout``): without one, a
# blackholed API server holds the calling thread, and the thread pool, for good.
REQUEST_TIMEOUT_SECONDS = 10.0


def build_api_client(
    *,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
) -> kubernetes.client.ApiClient:
    """An ApiClient for the cluster gatewatch runs in (or the one the kubeconfig points at).

    ``in_cluster`` None: decide from the environment (in a Pod and no kubeconfig
    or context asked for). Raises ConfigError naming the source when the
    configuration cannot be loaded.
    """
    if in_cluster is None:
        in_cluster = kubeconfig is None and context is None and bool(os.environ.get(IN_CLUSTER_VARIABLE))
    configuration = kubernetes.client.Configuration()
    if in_cluster:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException as error:
            raise ConfigError(f"cannot use the in-cluster service account: {error}",
                              source="in-cluster config") from None
        return kubernetes.client.ApiClient(configuration)
    path = str(kubeconfig) if kubeconfig is not None else None
    source = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        kubernetes.config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration,
            persist_config=False,  # never write refreshed tokens back into the user's file
        )
    except (kubernetes.config.ConfigException, OSError, TypeError, ValueError) as error:
        # TypeError/ValueError: the kubernetes loader's reaction to a malformed file.
        where = f" (context {context!r})" if context else ""
        raise ConfigError(f"cannot load the kubeconfig{where}: {error}", source=source) from None
    return kubernetes.client.ApiClient(configuration)


def check_api_server(
    api_client: kubernetes.client.ApiClient, *, namespace: str, timeout: float = STARTUP_CHECK_TIMEOUT
) -> None:
    """At start: the API server answers, accepts gatewatch's credentials, and its namespace exists.

    One GET of the namespace (the chart's ClusterRole allows it), without urllib3's
    retries, each of which would log a warning and a traceback; one answer is
    enough to know. Raises ``KubernetesApiError`` whose message is one line
    naming the problem and the server. Blocking: call it in a thread.
    """
    configuration = copy.copy(api_client.configuration)  # shallow: the shared one keeps its retries
    configuration.retries = False
    host = configuration.host

    def failed(reason: str, status: int | None = None) -> KubernetesApiError:
        return KubernetesApiError(reason, operation="get", kind="namespace", name=namespace, status=status)

    try:
        with kubernetes.client.ApiClient(configuration) as probe:
            rest.read_namespace(probe, namespace, timeout=timeout)
    except kubernetes.client.ApiException as error:
        if not error.status:  # the client's wrapping of a TLS failure: no HTTP answer at all
            raise failed(f"cannot reach the API server at {host}: {_one_line(error.reason)}") from None
        if error.status == 401:
            reason = (f"Unauthorized: the API server at {host} rejected gatewatch's credentials "
                      "(token or client certificate: expired, revoked, or for another cluster)")
        elif error.status == 404:
            reason = (f"Not Found: there is no namespace {namespace} at {host} (gatewatch's own namespace: "
                      "namespace, --namespace, GATEWATCH_NAMESPACE)")
        else:
            reason = api_error(error, operation="get", kind="namespace", name=namespace).reason
            if error.status == 403:
                reason += "; gatewatch's RBAC must allow it (the chart's ClusterRole does)"
        raise failed(_one_line(reason), error.status) from None
    except urllib3.exceptions.HTTPError as error:  # refused, unresolvable, timed out
        raise failed(f"cannot reach the API server at {host}: {_connection_problem(error)}") from None


def _connection_problem(error: BaseException) -> str:
    """What went wrong (refused, not resolved, timed out, TLS), without urllib3's connection repr."""
    reason = getattr(error, "reason", None)  # MaxRetryError wraps the error that counts
    if isinstance(reason, BaseException):
        error = reason
    # "HTTPSConnection(host='h', port=1): Failed to establish a new connection: [Errno 111] ..."
    text = _CONNECTION_REPR.sub("", str(error)).removeprefix("Failed to establish a new connection: ")
    return _one_line(text or type(error).__name__)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def api_error(
    error: kubernetes.client.ApiException,
    *,
    operation: str,
    kind: str,
    name: str,
    namespace: str | None = None,
) -> KubernetesApiError:
    """Our error for a failed call, with the API server's own message when it sent one."""
    reason = error.reason or "error"
    message = _status_message(error.body)
    if message:
        reason = f"{reason}: {message}"
    return KubernetesApiError(reason, operation=operation, kind=kind, name=name,
                              namespace=namespace, status=error.status)


def _status_message(body: object) -> str | None:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return None
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200]
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:300] if message else None
