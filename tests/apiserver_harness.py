"""The API server's side of a validating webhook, for tests.

Reads the ValidatingWebhookConfiguration gatewatch registered and calls the
webhooks the way kube-apiserver does (k8s.io/apiserver/pkg/admission/plugin/webhook):

- which webhooks apply: ``rules`` (apiGroups, apiVersions, resources with
  ``resource/subresource``, operations, scope) and ``namespaceSelector`` /
  ``objectSelector`` against the namespace's and the object's labels, then
  ``matchConditions`` (CEL, evaluated with cel-python: all true, or the webhook
  is skipped; an evaluation error is decided by ``failurePolicy``);
- the configuration itself is first checked as kube-apiserver validates it on
  create/update (``validate_webhook_configuration``: unique qualified names,
  label selectors, failurePolicy, sideEffects, timeouts, clientConfig): one it
  would refuse to store cannot be called here either;
- the call: HTTPS to ``clientConfig.url`` or the Service (here resolved to a
  local address, the certificate verified for ``<name>.<namespace>.svc`` against
  ``caBundle``), at ``path``, with ``timeoutSeconds``;
- the answer: a failed call (connection, timeout, non-200, bad body, uid
  mismatch) is decided by ``failurePolicy``; a dry-run request is rejected for
  a webhook whose ``sideEffects`` is not None/NoneOnDryRun; warnings are
  collected; the first denial wins with its status code and message.

``connect_request(url)`` builds the CONNECT kube-apiserver admits for a
port-forward or proxy URL (pods/portforward, pods/proxy, nodes/proxy).

Nothing of gatewatch is imported: this is the other side of the wire.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import aiohttp
import aiohttp.web

ServiceAddress = Callable[[str, str, int], tuple[str, int]]  # (namespace, name, port) -> (host, port)


@dataclass
class AdmissionResult:
    """What the user's API request would get."""

    allowed: bool
    code: int = 200
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    # Webhooks called, and calls that failed (the failurePolicy then decided).
    called: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ApiRequest:
    """The API request under admission, as the API server sees it."""

    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    resource: str  # plural, e.g. "pods"
    namespace: str | None
    name: str | None = None
    subresource: str | None = None
    group: str = ""
    version: str = "v1"
    kind: str = "Pod"
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None
    user: Mapping[str, Any] = field(default_factory=lambda: {
        "username": "alice@example.com", "uid": "u-1", "groups": ["system:authenticated"],
    })
    dry_run: bool = False


class ApiServerHarness:
    def __init__(
        self,
        configuration: Mapping[str, Any],
        *,
        namespace_labels: Callable[[str], Mapping[str, str]],
        service_address: ServiceAddress | None = None,
        client_certificate: tuple[Path, Path] | None = None,
    ) -> None:
        """``client_certificate``: (cert file, key file) the API server presents to webhooks, as its
        AdmissionConfiguration kubeconfig would name them; None: no client certificate (the default).
        Raises ValueError for a configuration kube-apiserver would not have stored."""
        problems = validate_webhook_configuration(configuration)
        if problems:
            raise ValueError("the API server would refuse this configuration: " + "; ".join(problems))
        self.configuration = configuration
        self._namespace_labels = namespace_labels
        self._service_address = service_address
        self._client_certificate = client_certificate

    async def admit(self, request: ApiRequest) -> AdmissionResult:
        result = AdmissionResult(allowed=True)
        for webhook in self.configuration.get("webhooks") or []:
            if not self._applies(webhook, request):
                continue
            try:
                if not _match_conditions_hold(webhook, request):
                    continue
            except Exception as error:  # an expression that fails to evaluate
                if webhook.get("failurePolicy", "Fail") == "Fail":
                    return AdmissionResult(
                        allowed=False, code=500, called=result.called,
                        message=f"failed to evaluate matchConditions of {webhook['name']!r}: {error}",
                    )
                continue
            if request.dry_run and webhook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                return AdmissionResult(
                    allowed=False, code=400, called=result.called,
                    message=f"admission webhook {webhook['name']!r} has side effects and does not support dry run",
                )
            result.called.append(webhook["name"])
            answer = await self._call(webhook, request, result)
            if answer is None:
                if webhook.get("failurePolicy", "Fail") == "Fail":
                    return AdmissionResult(
                        allowed=False, code=500, warnings=result.warnings, called=result.called,
                        failures=result.failures,
                        message=f"Internal error occurred: failed calling webhook {webhook['name']!r}: "
                        + result.failures[-1],
                    )
                continue  # Ignore: as if the webhook had not been called
            result.warnings.extend(answer.get("warnings") or [])
            if not answer.get("allowed"):
                status = answer.get("status") or {}
                return AdmissionResult(
                    allowed=False,
                    code=int(status.get("code") or 403),
                    message=f"admission webhook {webhook['name']!r} denied the request: "
                    + str(status.get("message") or "without explanation"),
                    warnings=result.warnings, called=result.called, failures=result.failures,
                )
        return result

    # --- which webhooks apply -------------------------------------------------------------

    def _applies(self, webhook: Mapping[str, Any], request: ApiRequest) -> bool:
        if not any(_rule_matches(rule, request) for rule in webhook.get("rules") or []):
            return False
        if request.namespace is not None:
            labels = dict(self._namespace_labels(request.namespace))
            # The API server adds this label to every namespace.
            labels.setdefault("kubernetes.io/metadata.name", request.namespace)
            if not label_selector_matches(webhook.get("namespaceSelector") or {}, labels):
                return False
        object_labels = ((request.object or request.old_object or {}).get("metadata") or {}).get("labels") or {}
        return label_selector_matches(webhook.get("objectSelector") or {}, object_labels)

    # --- the call --------------------------------------------------------------------------

    async def _call(
        self, webhook: Mapping[str, Any], request: ApiRequest, result: AdmissionResult
    ) -> Mapping[str, Any] | None:
        uid = str(uuid.uuid4())
        review = self._review(request, uid=uid)
        client_config = webhook.get("clientConfig") or {}
        try:
            url, server_hostname = self._url(client_config)
            # Only the registered caBundle is trusted, as by kube-apiserver; hostnames are checked.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cadata=base64.b64decode(client_config["caBundle"]).decode("ascii"))
            if self._client_certificate is not None:
                context.load_cert_chain(*(str(path) for path in self._client_certificate))
            timeout = aiohttp.ClientTimeout(total=float(webhook.get("timeoutSeconds", 10)))
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(
                    url, json=review, ssl=context, server_hostname=server_hostname
                ) as response:
                    body = await response.text()
                    if response.status != 200:
                        result.failures.append(f"HTTP {response.status}: {response.reason}")
                        return None
            answer = json.loads(body).get("response") or {}
            if answer.get("uid") != uid:
                result.failures.append(f"response uid {answer.get('uid')!r} does not match {uid!r}")
                return None
            return answer
        except asyncio.TimeoutError:
            result.failures.append("context deadline exceeded (timeout)")
        except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError, KeyError) as error:
            result.failures.append(f"{type(error).__name__}: {error}")
        return None

    def _url(self, client_config: Mapping[str, Any]) -> tuple[str, str | None]:
        if client_config.get("url"):
            return str(client_config["url"]), None
        service = client_config["service"]
        port = int(service.get("port", 443))
        if self._service_address is None:
            raise ValueError("a Service clientConfig needs a service_address resolver")
        host, local_port = self._service_address(service["namespace"], service["name"], port)
        path = service.get("path") or ""
        # The API server verifies the serving certificate for the Service's DNS name.
        return f"https://{host}:{local_port}{path}", f"{service['name']}.{service['namespace']}.svc"

    @staticmethod
    def _review(request: ApiRequest, *, uid: str) -> dict[str, Any]:
        resource = {"group": request.group, "version": request.version, "resource": request.resource}
        kind = {"group": request.group, "version": request.version, "kind": request.kind}
        payload: dict[str, Any] = {
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "operation": request.operation,
            "userInfo": dict(request.user),
            "object": request.object,
            "oldObject": request.old_object,
            "dryRun": request.dry_run,
            "options": request.options,
        }
        if request.subresource:
            payload["subResource"] = payload["requestSubResource"] = request.subresource
        if request.name:
            payload["name"] = request.name
        if request.namespace:
            payload["namespace"] = request.namespace
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": payload}


def _match_conditions_hold(webhook: Mapping[str, Any], request: ApiRequest) -> bool:
    """Every matchCondition true, as kube-apiserver's CEL would say (core CEL, via cel-python)."""
    conditions = webhook.get("matchConditions") or []
    if not conditions:
        return True
    import celpy  # the test extra; only needed for webhooks that have conditions

    environment = celpy.Environment()
    activation = {
        "object": celpy.json_to_cel(request.object),
        "oldObject": celpy.json_to_cel(request.old_object),
        "request": celpy.json_to_cel({"operation": request.operation, "userInfo": dict(request.user)}),
    }
    for condition in conditions:
        value = environment.program(environment.compile(condition["expression"])).evaluate(activation)
        if isinstance(value, celpy.CELEvalError):
            raise ValueError(f"{condition['name']}: {value}")
        if not bool(value):
            return False
    return True


def _rule_matches(rule: Mapping[str, Any], request: ApiRequest) -> bool:
    def has(values: Any, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    resource = request.resource if not request.subresource else f"{request.resource}/{request.subresource}"
    resources = rule.get("resources") or []
    resource_ok = (
        resource in resources
        or "*/*" in resources
        or (request.subresource is None and "*" in resources)
        or (request.subresource is not None and f"*/{request.subresource}" in resources)
        or (request.subresource is not None and f"{request.resource}/*" in resources)
    )
    scope = rule.get("scope", "*")
    scope_ok = scope == "*" or (scope == "Namespaced") == (request.namespace is not None)
    return (
        has(rule.get("apiGroups"), request.group)
        and has(rule.get("apiVersions"), request.version)
        and has(rule.get("operations"), request.operation)
        and resource_ok
        and scope_ok
    )


# --- what kube-apiserver accepts (pkg/apis/admissionregistration/validation) ------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_WEBHOOK_NAME = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL}){{2,}}$")  # at least three segments
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


def validate_webhook_configuration(configuration: Mapping[str, Any]) -> list[str]:
    """Why kube-apiserver would refuse to store ``configuration`` (empty: it would store it)."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        where = f"webhooks[{index}]"
        name = str(webhook.get("name", ""))
        if not _QUALIFIED_WEBHOOK_NAME.match(name) or len(name) > 253:
            problems.append(f"{where}.name: {name!r} is not a fully qualified name")
        if name in seen:
            problems.append(f"{where}.name: Duplicate value: {name!r}")
        seen.add(name)
        if webhook.get("failurePolicy") not in ("Ignore", "Fail"):
            problems.append(f"{where}.failurePolicy: Unsupported value: {webhook.get('failurePolicy')!r}")
        if webhook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            problems.append(f"{where}.sideEffects: Unsupported value: {webhook.get('sideEffects')!r}")
        if not 1 <= int(webhook.get("timeoutSeconds", 10)) <= 30:
            problems.append(f"{where}.timeoutSeconds: must be between 1 and 30 seconds")
        if "v1" not in (webhook.get("admissionReviewVersions") or []):
            problems.append(f"{where}.admissionReviewVersions: must include v1")
        client_config = webhook.get("clientConfig") or {}
        if ("url" in client_config) == ("service" in client_config):
            problems.append(f"{where}.clientConfig: exactly one of url or service is required")
        path = (client_config.get("service") or {}).get("path")
        if path is not None and not str(path).startswith("/"):
            problems.append(f"{where}.clientConfig.service.path: must start with a '/'")
        for kind in ("namespaceSelector", "objectSelector"):
            problems += [f"{where}.{kind}.{problem}" for problem in _selector_problems(webhook.get(kind) or {})]
        condition_names = [condition.get("name") for condition in webhook.get("matchConditions") or []]
        if len(condition_names) != len(set(condition_names)):
            problems.append(f"{where}.matchConditions: Duplicate value")
    return problems


def _selector_problems(selector: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in (selector.get("matchLabels") or {}).items():
        if not _LABEL_KEY.match(key):
            problems.append(f"matchLabels: Invalid value: {key!r}")
        if not _LABEL_VALUE.match(str(value)):
            problems.append(f"matchLabels: Invalid value: {value!r}")
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        where = f"matchExpressions[{index}]"
        operator, values = expression.get("operator"), expression.get("values") or []
        if not _LABEL_KEY.match(str(expression.get("key", ""))):
            problems.append(f"{where}.key: Invalid value: {expression.get('key')!r}")
        if operator in ("In", "NotIn"):
            if not values:
                problems.append(f"{where}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                problems.append(f"{where}.values: Forbidden: may not be specified when `operator` is 'Exists' or "
                                "'DoesNotExist'")
        else:
            problems.append(f"{where}.operator: Invalid value: {operator!r}")
        problems += [f"{where}.values: Invalid value: {value!r}" for value in values if not _LABEL_VALUE.match(value)]
    return problems


# --- connect subresources: what kube-apiserver sends through admission ---------------------------
#
# kube-apiserver's connecters (pkg/registry/core/pod/rest/subresources.go, node/rest/proxy.go):
# the options kind each decodes, and whether the rest of the URL path becomes its ``path``.
# Every HTTP method of these calls (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS for proxies;
# the SPDY POST or the websocket GET of a port-forward) is admitted as one CONNECT
# (endpoints/handlers/rest.go ConnectResource); only the audit log knows the method, as its
# verb (get, create, update, patch, delete).
CONNECT_OPTIONS: dict[tuple[str, str], tuple[str, bool]] = {
    ("pods", "portforward"): ("PodPortForwardOptions", False),
    ("pods", "proxy"): ("PodProxyOptions", True),
    ("nodes", "proxy"): ("NodeProxyOptions", True),
}
_CONNECT_URL = re.compile(
    r"^/api/v1/(?:namespaces/(?P<namespace>[^/]+)/)?(?P<resource>pods|nodes)/(?P<name>[^/]+)"
    r"/(?P<subresource>portforward|proxy)(?P<rest>/.*)?$"
)


def connect_request(url: str, *, user: Mapping[str, Any] | None = None) -> ApiRequest:
    """The admission request kube-apiserver makes for a port-forward or proxy call to ``url``.

    The object is the options decoded from the query (getRequestOptions): for
    PodPortForwardOptions its ``ports`` (kubectl sends none: it names ports in
    SPDY stream headers); for the proxy options only ``path``, the rest of the
    URL path with a leading "/" (and the trailing one kept). Query keys the
    options do not have (a kubelet exec's ``command``) are dropped: admission
    never sees them. ``namespace`` is None for nodes, so the webhook's
    namespaceSelector does not apply.
    """
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    match = _CONNECT_URL.match(parts.path)
    if match is None or (match["resource"] == "nodes") == (match["namespace"] is not None):
        raise ValueError(f"not a port-forward or proxy URL: {url!r}")
    kind, has_path = CONNECT_OPTIONS[(match["resource"], match["subresource"])]
    if match["subresource"] == "portforward" and match["rest"]:
        raise ValueError(f"portforward takes no subpath: {url!r}")
    options: dict[str, Any] = {"kind": kind, "apiVersion": "v1"}
    query = parse_qs(parts.query)
    if kind == "PodPortForwardOptions" and query.get("ports"):
        options["ports"] = [int(port) for port in query["ports"]]
    if has_path:
        options["path"] = match["rest"] or ""
    return ApiRequest(
        operation="CONNECT", resource=match["resource"], subresource=match["subresource"],
        namespace=match["namespace"], name=match["name"], kind=kind, object=options,
        **({"user": dict(user)} if user is not None else {}),
    )


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


# --- the cluster: kube_emulator's KubeEmulator as the Kubernetes API ----------------------------


def add_namespace(k8s: Any, name: str, labels: Mapping[str, str] | None = None) -> None:
    """A namespace with the label the API server sets on every namespace."""
    from kube_emulator import NAMESPACES, put_object

    put_object(k8s, NAMESPACES, None, {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
    })


def namespace_labels(k8s: Any) -> Callable[[str], Mapping[str, str]]:
    """The namespaceSelector's view of a namespace: its labels as stored in the emulator."""
    from kube_emulator import NAMESPACES, read_object

    def labels(name: str) -> Mapping[str, str]:
        namespace = read_object(k8s, NAMESPACES, None, name) or {}
        return (namespace.get("metadata") or {}).get("labels") or {}

    return labels


def add_pod(k8s: Any, namespace: str, name: str, *, images: list[str], labels: Mapping[str, str] | None = None,
            service_account: str = "default") -> dict[str, Any]:
    from kube_emulator import PODS, put_object

    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": dict(labels or {})},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": f"c{index}", "image": image} for index, image in enumerate(images)],
        },
    }
    put_object(k8s, PODS, namespace, pod)
    return pod


# --- a front for real kubectl: admission, then the emulator as storage -----------------------


class AdmissionProxy:
    """What kubectl talks to: Pod creation and exec go through the webhooks, everything else passes.

    Admission warnings become ``Warning: 299 - "..."`` headers and a denial a
    403 Status, as kube-apiserver sends them, so kubectl prints what a user sees.
    An exec (``kubectl exec``: a websocket GET, or the SPDY POST kubectl falls
    back to) becomes the PodExecOptions kube-apiserver decodes from the query
    and is admitted as a CONNECT; the API double has no container runtime, so an
    admitted exec is answered with a 400 Status saying so. ``exec_results``
    records every exec admission.
    """

    POD_COLLECTION = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods/?$")
    POD_EXEC = re.compile(r"^/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/exec$")
    EXEC_ADMITTED = "exec admitted by the webhooks; the test API double has no container runtime to run it"

    def __init__(self, *, upstream: str, harness: Callable[[], ApiServerHarness]) -> None:
        self._upstream = upstream.rstrip("/")
        self._harness = harness
        self._runner: aiohttp.web.AppRunner | None = None
        self.url: str | None = None
        self.exec_results: list[AdmissionResult] = []

    async def __aenter__(self) -> "AdmissionProxy":
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _exec(self, request: aiohttp.web.Request, match: re.Match[str]) -> aiohttp.web.StreamResponse:
        query = request.query
        options: dict[str, Any] = {"kind": "PodExecOptions", "apiVersion": "v1",
                                   "command": query.getall("command", [])}
        for flag in ("stdin", "stdout", "stderr", "tty"):
            if query.get(flag) in ("true", "1"):
                options[flag] = True
        if query.get("container"):
            options["container"] = query["container"]
        result = await self._harness().admit(ApiRequest(
            operation="CONNECT", resource="pods", subresource="exec", namespace=match["namespace"],
            name=match["name"], kind="PodExecOptions", object=options,
            user={"username": "kubectl-user", "uid": "u-9", "groups": ["system:authenticated"]},
        ))
        self.exec_results.append(result)
        if result.allowed:
            code, reason, message = 400, "BadRequest", self.EXEC_ADMITTED
        else:
            code = result.code
            reason, message = "Forbidden" if code == 403 else "InternalError", result.message
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code}
        return aiohttp.web.json_response(status, status=code, headers=_warning_headers(result.warnings))

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        exec_match = self.POD_EXEC.match(request.path)
        if exec_match:
            return await self._exec(request, exec_match)
        body = await request.read()
        warnings: list[str] = []
        match = self.POD_COLLECTION.match(request.path)
        if request.method == "POST" and match:
            pod = json.loads(body)
            result = await self._harness().admit(ApiRequest(
                operation="CREATE", resource="pods", namespace=match["namespace"],
                name=(pod.get("metadata") or {}).get("name"), object=pod,
                user={"username": "kubectl-user", "uid": "u-9", "groups": ["system:authenticated"]},
                dry_run="dryRun" in request.query,
            ))
            warnings = result.warnings
            if not result.allowed:
                status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": result.message, "reason": "Forbidden" if result.code == 403 else "InternalError",
                          "code": result.code}
                return aiohttp.web.json_response(status, status=result.code, headers=_warning_headers(warnings))
            if "dryRun" in request.query:
                return aiohttp.web.json_response(pod, status=201, headers=_warning_headers(warnings))
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, self._upstream + request.path_qs, data=body,
                headers={key: value for key, value in request.headers.items()
                         if key.lower() in ("content-type", "accept")},
            ) as upstream:
                payload = await upstream.read()
                response = aiohttp.web.Response(body=payload, status=upstream.status,
                                                content_type=upstream.content_type)
        for key, value in _warning_headers(warnings):
            response.headers.add(key, value)
        return response


def _warning_headers(warnings: list[str]) -> list[tuple[str, str]]:
    # RFC 7234 warn-code 299 with an escaped quoted text, as kube-apiserver writes them.
    return [("Warning", '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"') for text in warnings]
