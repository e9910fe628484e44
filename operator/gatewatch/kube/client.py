"""The one place a ``kubernetes.client.ApiClient`` is built, shared by every kube module.

In a Pod (``KUBERNETES_SERVICE_HOST`` set and no kubeconfig asked for) the
service account is used; otherwise a kubeconfig: ``kubeconfig`` if given, else
``$KUBECONFIG``, else ``~/.kube/config``, with its current context or ``context``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes.client
import kubernetes.config

from gatewatch.errors import ConfigError, KubernetesApiError

IN_CLUSTER_VARIABLE = "KUBERNETES_SERVICE_HOST"
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
