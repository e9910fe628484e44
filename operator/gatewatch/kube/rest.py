"""The Kubernetes API calls gatewatch makes, as plain functions over the shared ``ApiClient``.

Why not ``kubernetes.client.CoreV1Api`` and its siblings: the generated API
classes import their model classes when first used, about 250 modules and
~24 MiB of resident memory (issue #12's RSS goal), for calls whose answers
gatewatch reads as plain JSON anyway. These functions go through the same
``ApiClient`` (configuration, bearer token or client certificate, TLS, the
user agent and urllib3's retries) and build the same requests: the same path
(names quoted the same way), ``Accept: application/json``, and for a PATCH
with an object body the strategic-merge patch the generated classes send.
A non-2xx answer raises ``kubernetes.client.ApiException`` with its status,
reason and body, as the generated classes did; every answer is a plain dict.

Blocking, like the generated classes: callers run them in a thread.
"""
from __future__ import annotations

import json
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

Body = dict[str, Any]
# A bound on one call, as the client takes it: total seconds, or (connect, read).
Timeout = float | tuple[float, float] | None

# What kubernetes.client's rest layer sends for a PATCH whose body is an object (not a list of
# JSON-patch operations): built-in kinds take a strategic-merge patch.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def call(
    api_client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    path_params: dict[str, str],
    body: Body | None = None,
    content_type: str | None = None,
    timeout: Timeout = None,
) -> Body:
    """One API call; the answer's JSON as a dict (``{}`` when empty). ``ApiException`` on non-2xx."""
    headers: dict[str, Any] = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    request = api_client.param_serialize(
        method=method, resource_path=path, path_params=path_params, header_params=headers,
        body=body, auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return json.loads(response.data or b"{}")


# -- namespaced objects, by their collection's path -----------------------------

_CONFIGMAPS = "/api/v1/namespaces/{namespace}/configmaps"
_SECRETS = "/api/v1/namespaces/{namespace}/secrets"
_EVENTS = "/apis/events.k8s.io/v1/namespaces/{namespace}/events"


def _read(api_client: kubernetes.client.ApiClient, collection: str, name: str, namespace: str,
          timeout: Timeout) -> Body:
    return call(api_client, "GET", collection + "/{name}", path_params={"name": name, "namespace": namespace},
                timeout=timeout)


def _create(api_client: kubernetes.client.ApiClient, collection: str, namespace: str, body: Body,
            timeout: Timeout) -> Body:
    return call(api_client, "POST", collection, path_params={"namespace": namespace}, body=body, timeout=timeout)


def _patch(api_client: kubernetes.client.ApiClient, collection: str, name: str, namespace: str, body: Body,
           timeout: Timeout) -> Body:
    return call(api_client, "PATCH", collection + "/{name}", path_params={"name": name, "namespace": namespace},
                body=body, content_type=STRATEGIC_MERGE_PATCH, timeout=timeout)


# -- core/v1 ------------------------------------------------------------------

def read_namespace(api_client: kubernetes.client.ApiClient, name: str, *, timeout: Timeout) -> Body:
    return call(api_client, "GET", "/api/v1/namespaces/{name}", path_params={"name": name}, timeout=timeout)


def read_namespaced_pod(api_client: kubernetes.client.ApiClient, name: str, namespace: str, *,
                        timeout: Timeout) -> Body:
    return _read(api_client, "/api/v1/namespaces/{namespace}/pods", name, namespace, timeout)


def read_namespaced_config_map(api_client: kubernetes.client.ApiClient, name: str, namespace: str, *,
                               timeout: Timeout) -> Body:
    return _read(api_client, _CONFIGMAPS, name, namespace, timeout)


def create_namespaced_config_map(api_client: kubernetes.client.ApiClient, namespace: str, body: Body, *,
                                 timeout: Timeout) -> Body:
    return _create(api_client, _CONFIGMAPS, namespace, body, timeout)


def patch_namespaced_config_map(api_client: kubernetes.client.ApiClient, name: str, namespace: str, body: Body, *,
                                timeout: Timeout) -> Body:
    return _patch(api_client, _CONFIGMAPS, name, namespace, body, timeout)


def read_namespaced_secret(api_client: kubernetes.client.ApiClient, name: str, namespace: str, *,
                           timeout: Timeout) -> Body:
    return _read(api_client, _SECRETS, name, namespace, timeout)


def create_namespaced_secret(api_client: kubernetes.client.ApiClient, namespace: str, body: Body, *,
                             timeout: Timeout) -> Body:
    return _create(api_client, _SECRETS, namespace, body, timeout)


def replace_namespaced_secret(api_client: kubernetes.client.ApiClient, name: str, namespace: str, body: Body, *,
                              timeout: Timeout) -> Body:
    return call(api_client, "PUT", _SECRETS + "/{name}", path_params={"name": name, "namespace": namespace},
                body=body, timeout=timeout)


# -- events.k8s.io/v1 ---------------------------------------------------------

def read_namespaced_event(api_client: kubernetes.client.ApiClient, name: str, namespace: str, *,
                          timeout: Timeout) -> Body:
    return _read(api_client, _EVENTS, name, namespace, timeout)


def create_namespaced_event(api_client: kubernetes.client.ApiClient, namespace: str, body: Body, *,
                            timeout: Timeout) -> Body:
    return _create(api_client, _EVENTS, namespace, body, timeout)


def patch_namespaced_event(api_client: kubernetes.client.ApiClient, name: str, namespace: str, body: Body, *,
                           timeout: Timeout) -> Body:
    return _patch(api_client, _EVENTS, name, namespace, body, timeout)


# -- admissionregistration.k8s.io/v1 ------------------------------------------

_WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def read_validating_webhook_configuration(api_client: kubernetes.client.ApiClient, name: str, *,
                                          timeout: Timeout) -> Body:
    return call(api_client, "GET", _WEBHOOKS + "/{name}", path_params={"name": name}, timeout=timeout)


def create_validating_webhook_configuration(api_client: kubernetes.client.ApiClient, body: Body, *,
                                            timeout: Timeout) -> Body:
    return call(api_client, "POST", _WEBHOOKS, path_params={}, body=body, timeout=timeout)


def replace_validating_webhook_configuration(api_client: kubernetes.client.ApiClient, name: str, body: Body, *,
                                             timeout: Timeout) -> Body:
    return call(api_client, "PUT", _WEBHOOKS + "/{name}", path_params={"name": name}, body=body, timeout=timeout)


def delete_validating_webhook_configuration(api_client: kubernetes.client.ApiClient, name: str, *,
                                            timeout: Timeout = None) -> Body:
    return call(api_client, "DELETE", _WEBHOOKS + "/{name}", path_params={"name": name}, timeout=timeout)
