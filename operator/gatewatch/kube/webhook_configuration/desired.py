"""The ValidatingWebhookConfiguration gatewatch wants, built as a plain object (pure).

Per handler, one entry per namespace class of ``gatewatch.namespace_modes`` (its
namespaceSelector, its mode in the path, ``failurePolicy: Fail`` for enforce);
``POD_IMAGES_CHANGED`` is the CEL match condition that sends a pod UPDATE to
gatewatch only when it changes a container image.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence
from urllib.parse import urlsplit

from gatewatch.config import Settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError
from gatewatch.namespace_modes import ModePolicy, NamespaceClass

FailurePolicy = Literal["Ignore", "Fail"]
WEBHOOK_NAME_SUFFIX = "gatewatch.io"  # webhook entry names must be qualified: pods-exec.gatewatch.io
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "gatewatch"}
API_VERSION = "admissionregistration.k8s.io/v1"
KIND = "ValidatingWebhookConfiguration"
GENERATION_ANNOTATION = "gatewatch.io/generation"


@dataclass(frozen=True)
class MatchCondition:
    """A webhook ``matchConditions`` entry: the API server calls the webhook only when ``expression`` is true.

    CEL, GA in Kubernetes 1.30 (beta, on by default, since 1.28). When an
    expression fails to evaluate, the webhook's failurePolicy decides: with
    ``Ignore`` the request is not sent, so expressions guard every optional
    field with ``has()``.
    """

    name: str
    expression: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "expression": self.expression}


# Container kinds whose images a pod UPDATE can change (spec.ephemeralContainers
# only through pods/ephemeralcontainers; listed for completeness, it costs nothing).
_POD_CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")


def _images_cel(obj: str, container_kind: str) -> str:
    # A list of images, one per container in order; [] when the list is absent;
    # '' for a container without image (templates allow it; guarded so no error).
    return (f"(has({obj}.spec.{container_kind}) ? {obj}.spec.{container_kind}"
            f".map(c, has(c.image) ? c.image : '') : [])")


def pod_images_changed_expression() -> str:
    """CEL: true when any container kind's images differ between ``object`` and ``oldObject``.

    A pod's containers cannot be added, removed or reordered by an update;
    comparing the image lists in order therefore finds exactly the image
    changes. Metadata-only updates (labels, annotations, finalizers, which
    controllers write constantly) compare equal and never reach gatewatch.
    """
    return " || ".join(
        f"{_images_cel('object', kind)} != {_images_cel('oldObject', kind)}" for kind in _POD_CONTAINER_KINDS
    )


POD_IMAGES_CHANGED = MatchCondition(name="pod-images-changed", expression=pod_images_changed_expression())


class AdmissionHandler(Protocol):
    """One admission handler gatewatch serves (the controller's ``WebhookRoute`` is one)."""

    @property
    def handler_id(self) -> str: ...

    @property
    def api_group(self) -> str: ...

    @property
    def api_version(self) -> str: ...

    @property
    def resource_path(self) -> str: ...  # "pods" or "pods/exec"

    @property
    def operations(self) -> tuple[str, ...]: ...

    @property
    def match_conditions(self) -> tuple[MatchCondition, ...]: ...  # () for none

    @property
    def scope(self) -> str: ...  # "Namespaced", or "Cluster" for nodes/proxy
    def never_denies(self) -> bool: ...  # warnings at most: always failurePolicy Ignore


@dataclass(frozen=True)
class WebhookHandler:
    """A plain ``AdmissionHandler``."""

    handler_id: str
    resource_path: str
    operations: tuple[str, ...]
    api_group: str = ""
    api_version: str = "v1"
    match_conditions: tuple[MatchCondition, ...] = ()
    scope: str = "Namespaced"
    never_denies: bool = False


@dataclass(frozen=True)
class ServiceTarget:
    """The Service the API server calls."""

    name: str
    namespace: str
    port: int = 443


def webhook_entry_name(handler_id: str, mode: Mode, index: int = 1) -> str:
    """``pods-exec.enforce.gatewatch.io``; ``pods-exec.enforce-2.gatewatch.io`` for a mode's second class."""
    suffix = mode.value if index == 1 else f"{mode.value}-{index}"
    return f"{handler_id}.{suffix}.{WEBHOOK_NAME_SUFFIX}"


def build_webhook_configuration(
    *,
    name: str,
    handlers: Sequence[AdmissionHandler],
    namespace_classes: Sequence[NamespaceClass],
    ca_bundle: bytes,
    service: ServiceTarget | None = None,
    url: str | None = None,
    path: str = "/validate",
    failure_policy: FailurePolicy = "Ignore",
    enforce_failure_policy: FailurePolicy = "Fail",
    timeout_seconds: int = 5,
    cluster_mode: Mode | None = None,
) -> dict[str, Any]:
    """The desired ValidatingWebhookConfiguration: per handler, one webhook per namespace class
    (a cluster-scoped handler, nodes/proxy: one webhook, in ``cluster_mode``; None: the
    strongest class's mode; off: none).

    A class (``gatewatch.namespace_modes``) is a namespaceSelector and the mode of every
    namespace it selects; its entries call ``{path}/{handler_id}/{mode}``, so the API
    server's reading of the namespace's labels reaches gatewatch with each review, and
    ``enforce`` classes get ``enforce_failure_policy`` (an outage must not turn denials into
    admits), the others ``failure_policy``. Exactly one of ``service`` and ``url`` (local
    development). Every field the API server would default is set, so the live object can
    be compared as is. Raises ConfigError for values Kubernetes would reject.
    """
    if (service is None) == (url is None):
        raise ConfigError("exactly one of webhook.service and webhook.url must be set", source="webhook")
    for policy, source in ((failure_policy, "failurePolicy"), (enforce_failure_policy, "enforceFailurePolicy")):
        if policy not in ("Ignore", "Fail"):
            raise ConfigError(f"must be Ignore or Fail, not {policy!r}", source=f"webhook.{source}")
    if not 1 <= timeout_seconds <= 30:
        raise ConfigError(f"must be between 1 and 30, not {timeout_seconds}", source="webhook.timeoutSeconds")
    if url is not None and urlsplit(url).scheme != "https":
        raise ConfigError(f"must be an https:// URL, not {url!r}", source="webhook.url")
    if not handlers:
        raise ConfigError("no admission handlers to register", source="webhook")
    prefix = "/" + path.strip("/") if path.strip("/") else ""
    encoded_bundle = base64.b64encode(ca_bundle).decode("ascii")
    webhooks = []
    if cluster_mode is None:
        cluster_mode = max((entry.mode for entry in namespace_classes), default=Mode.OFF, key=lambda m: m.rank)
    for handler in handlers:
        seen: dict[Mode, int] = {}
        # A cluster-scoped resource (nodes/proxy) has no namespace: the API server applies no
        # namespaceSelector to it (only to namespaces themselves), so every entry would be called.
        # One entry then, in ``cluster_mode``; exempt namespaces and labels cannot opt a node out.
        classes: Sequence[Any] = namespace_classes
        if handler.scope == "Cluster":
            classes = () if cluster_mode is Mode.OFF else (NamespaceClass(cluster_mode, ()),)
        for namespace_class in classes:
            mode = namespace_class.mode
            if handler.never_denies and mode is Mode.AUDIT:
                continue  # it would only ever answer "allowed, nothing to say": no call at all
            seen[mode] = seen.get(mode, 0) + 1
            handler_path = f"{prefix}/{handler.handler_id}/{mode.value}"
            client_config: dict[str, Any] = {"caBundle": encoded_bundle}
            if service is not None:
                client_config["service"] = {
                    "name": service.name, "namespace": service.namespace, "port": service.port, "path": handler_path,
                }
            else:
                client_config["url"] = f"{url.rstrip('/')}{handler_path}"  # type: ignore[union-attr]
            entry: dict[str, Any] = {
                "name": webhook_entry_name(handler.handler_id, mode, seen[mode]),
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config,
                "rules": [{
                    "apiGroups": [handler.api_group],
                    "apiVersions": [handler.api_version],
                    "operations": list(handler.operations),
                    "resources": [handler.resource_path],
                    "scope": handler.scope,
                }],
                # A handler that never denies is never worth a refusal while gatewatch is down.
                "failurePolicy": (
                    "Ignore" if handler.never_denies
                    else enforce_failure_policy if mode is Mode.ENFORCE else failure_policy
                ),
                "matchPolicy": "Equivalent",
                "namespaceSelector": namespace_class.selector() if namespace_class.requirements else {},
                "objectSelector": {},
                "sideEffects": "NoneOnDryRun",  # Events and alerts, none for dry-run requests
                "timeoutSeconds": timeout_seconds,
            }
            if handler.match_conditions:
                # Only when there are any: the API server omits an empty list, so the live
                # entry can be compared as is (and a matchConditions added by someone else is drift).
                entry["matchConditions"] = [condition.as_dict() for condition in handler.match_conditions]
            webhooks.append(entry)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": dict(MANAGED_BY_LABEL)},
        "webhooks": webhooks,
    }


@dataclass(frozen=True)
class WebhookRegistration:
    """Everything of the configuration but the CA bundle (which changes on certificate rotation)."""

    name: str
    handlers: tuple[AdmissionHandler, ...]
    namespace_classes: tuple[NamespaceClass, ...]
    service: ServiceTarget | None = None
    url: str | None = None
    path: str = "/validate"
    failure_policy: FailurePolicy = "Ignore"
    enforce_failure_policy: FailurePolicy = "Fail"
    timeout_seconds: int = 5
    cluster_mode: Mode | None = None  # nodes/proxy's entry (None: the strongest class's)

    @classmethod
    def from_settings(cls, settings: Settings, *, handlers: Sequence[AdmissionHandler]) -> WebhookRegistration:
        webhook = settings.webhook
        service = None
        if webhook.url is None:
            service = ServiceTarget(
                name=webhook.service.name,
                namespace=webhook.service.namespace or settings.namespace,
                port=webhook.service.port,
            )
        policy = ModePolicy.from_settings(settings)
        return cls(
            name=webhook.configuration_name,
            handlers=tuple(handlers),
            namespace_classes=policy.namespace_classes(),
            cluster_mode=policy.cluster_mode(),
            service=service,
            url=webhook.url,
            path=webhook.path,
            failure_policy=webhook.failure_policy,
            enforce_failure_policy=webhook.enforce_failure_policy,
            timeout_seconds=webhook.timeout_seconds,
        )

    def build(self, ca_bundle: bytes) -> dict[str, Any]:
        return build_webhook_configuration(
            name=self.name, handlers=self.handlers, namespace_classes=self.namespace_classes, ca_bundle=ca_bundle,
            service=self.service, url=self.url, path=self.path, failure_policy=self.failure_policy,
            enforce_failure_policy=self.enforce_failure_policy, timeout_seconds=self.timeout_seconds,
            cluster_mode=self.cluster_mode,
        )
