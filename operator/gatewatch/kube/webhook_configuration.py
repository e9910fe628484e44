"""The ValidatingWebhookConfiguration gatewatch registers and keeps in place.

Managed by gatewatch, not by kopf: kopf's managed mode has no
namespaceSelector, hard-codes timeoutSeconds 30 and empties the webhooks on
every stop, which would drop enforcement during a rolling update.

- ``build_webhook_configuration(...)``: the desired object (pure).
- ``POD_IMAGES_CHANGED``: the CEL match condition that sends a pod UPDATE to
  gatewatch only when it changes a container image.
- ``diff_webhook_configuration(desired, live)``: what differs (pure).
- ``WebhookConfigurationReconciler``: creates it, keeps it as desired, and
  restores it when someone else edits or deletes it, logging that drift as a
  security event (logger ``gatewatch.security``). It never deletes it: on
  shutdown the configuration stays, so the next replica finds it in place.
- ``delete_webhook_configuration(...)``: ``gatewatch uninstall-webhook``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Literal, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

import kubernetes.client

from gatewatch.errors import ConfigError, GatewatchError, KubernetesApiError
from gatewatch.kube.client import api_error

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("gatewatch.security")

FailurePolicy = Literal["Ignore", "Fail"]
IGNORE_LABEL = "gatewatch.io/ignore"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace
WEBHOOK_NAME_SUFFIX = "gatewatch.io"  # webhook entry names must be qualified: pods-exec.gatewatch.io
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "gatewatch"}
API_VERSION = "admissionregistration.k8s.io/v1"
KIND = "ValidatingWebhookConfiguration"


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


@dataclass(frozen=True)
class WebhookHandler:
    """A plain ``AdmissionHandler``."""

    handler_id: str
    resource_path: str
    operations: tuple[str, ...]
    api_group: str = ""
    api_version: str = "v1"
    match_conditions: tuple[MatchCondition, ...] = ()


@dataclass(frozen=True)
class ServiceTarget:
    """The Service the API server calls."""

    name: str
    namespace: str
    port: int = 443


def webhook_entry_name(handler_id: str) -> str:
    return f"{handler_id}.{WEBHOOK_NAME_SUFFIX}"


def namespace_selector(
    *, own_namespace: str, exempt_namespaces: Sequence[str] = (), ignore_label: bool = True
) -> dict[str, Any]:
    """Never call gatewatch for kube-system, its own namespace, exempt ones, or (``ignore_label``)
    namespaces labelled ``gatewatch.io/ignore=true``."""
    excluded = sorted({"kube-system", own_namespace, *exempt_namespaces})
    expressions: list[dict[str, Any]] = [{"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": excluded}]
    if ignore_label:
        # Whoever may label the namespace can opt it out: namespaces.ignoreLabel turns this off.
        expressions.append({"key": IGNORE_LABEL, "operator": "NotIn", "values": ["true"]})
    return {"matchExpressions": expressions}


def build_webhook_configuration(
    *,
    name: str,
    handlers: Sequence[AdmissionHandler],
    ca_bundle: bytes,
    own_namespace: str,
    service: ServiceTarget | None = None,
    url: str | None = None,
    path: str = "/validate",
    failure_policy: FailurePolicy = "Ignore",
    timeout_seconds: int = 5,
    exempt_namespaces: Sequence[str] = (),
    ignore_label: bool = True,
) -> dict[str, Any]:
    """The desired ValidatingWebhookConfiguration: one webhook per handler at ``{path}/{handler_id}``.

    Exactly one of ``service`` and ``url`` (local development). Every field the
    API server would default is set, so the live object can be compared as is.
    Raises ConfigError for values Kubernetes would reject.
    """
    if (service is None) == (url is None):
        raise ConfigError("exactly one of webhook.service and webhook.url must be set", source="webhook")
    if failure_policy not in ("Ignore", "Fail"):
        raise ConfigError(f"must be Ignore or Fail, not {failure_policy!r}", source="webhook.failurePolicy")
    if not 1 <= timeout_seconds <= 30:
        raise ConfigError(f"must be between 1 and 30, not {timeout_seconds}", source="webhook.timeoutSeconds")
    if url is not None and urlsplit(url).scheme != "https":
        raise ConfigError(f"must be an https:// URL, not {url!r}", source="webhook.url")
    if not handlers:
        raise ConfigError("no admission handlers to register", source="webhook")
    prefix = "/" + path.strip("/") if path.strip("/") else ""
    selector = namespace_selector(
        own_namespace=own_namespace, exempt_namespaces=exempt_namespaces, ignore_label=ignore_label
    )
    encoded_bundle = base64.b64encode(ca_bundle).decode("ascii")
    webhooks = []
    for handler in handlers:
        handler_path = f"{prefix}/{handler.handler_id}"
        client_config: dict[str, Any] = {"caBundle": encoded_bundle}
        if service is not None:
            client_config["service"] = {
                "name": service.name, "namespace": service.namespace, "port": service.port, "path": handler_path,
            }
        else:
            client_config["url"] = f"{url.rstrip('/')}{handler_path}"  # type: ignore[union-attr]
        entry: dict[str, Any] = {
            "name": webhook_entry_name(handler.handler_id),
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [handler.api_group],
                "apiVersions": [handler.api_version],
                "operations": list(handler.operations),
                "resources": [handler.resource_path],
                "scope": "Namespaced",
            }],
            "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent",
            "namespaceSelector": selector,
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
    own_namespace: str
    service: ServiceTarget | None = None
    url: str | None = None
    path: str = "/validate"
    failure_policy: FailurePolicy = "Ignore"
    timeout_seconds: int = 5
    exempt_namespaces: tuple[str, ...] = ()
    ignore_label: bool = True

    @classmethod
    def from_settings(cls, settings: Any, *, handlers: Sequence[AdmissionHandler]) -> WebhookRegistration:
        """From ``gatewatch.config.Settings`` (typed loosely: kube/ does not import the config module)."""
        webhook = settings.webhook
        service = None
        if webhook.url is None:
            service = ServiceTarget(
                name=webhook.service.name,
                namespace=webhook.service.namespace or settings.namespace,
                port=webhook.service.port,
            )
        return cls(
            name=webhook.configuration_name,
            handlers=tuple(handlers),
            own_namespace=settings.namespace,
            service=service,
            url=webhook.url,
            path=webhook.path,
            failure_policy=webhook.failure_policy,
            timeout_seconds=webhook.timeout_seconds,
            exempt_namespaces=tuple(settings.namespaces.exempt),
            ignore_label=settings.namespaces.ignore_label,
        )

    def build(self, ca_bundle: bytes) -> dict[str, Any]:
        return build_webhook_configuration(
            name=self.name, handlers=self.handlers, ca_bundle=ca_bundle, own_namespace=self.own_namespace,
            service=self.service, url=self.url, path=self.path, failure_policy=self.failure_policy,
            timeout_seconds=self.timeout_seconds, exempt_namespaces=self.exempt_namespaces,
            ignore_label=self.ignore_label,
        )


# --- drift ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between the desired and the live configuration."""

    webhook: str | None  # the webhook entry's name; None for the whole configuration
    field: str  # e.g. "failurePolicy", "clientConfig", "<entry>" (added/removed), "<configuration>"
    expected: Any
    found: Any

    def as_dict(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "field": self.field,
                "expected": _short(self.expected), "found": _short(self.found)}


def diff_webhook_configuration(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Change]:
    """What differs, per webhook entry and field; extra fields in a live entry count too.

    Only ``webhooks`` is compared (metadata is the API server's and other tools').
    """
    if live is None:
        return [Change(webhook=None, field="<configuration>", expected="present", found="missing")]
    changes: list[Change] = []
    desired_entries = {entry["name"]: entry for entry in desired.get("webhooks") or []}
    live_entries = {entry.get("name"): entry for entry in live.get("webhooks") or [] if isinstance(entry, Mapping)}
    for name, entry in desired_entries.items():
        live_entry = live_entries.get(name)
        if live_entry is None:
            changes.append(Change(webhook=name, field="<entry>", expected="present", found="missing"))
            continue
        for key, value in entry.items():
            if live_entry.get(key) != value:
                changes.append(Change(webhook=name, field=key, expected=value, found=live_entry.get(key)))
        for key in sorted(set(live_entry) - set(entry)):
            # e.g. matchConditions added to exempt requests: as much a bypass as a changed selector.
            changes.append(Change(webhook=name, field=key, expected=None, found=live_entry[key]))
    for name in live_entries.keys() - desired_entries.keys():
        changes.append(Change(webhook=str(name), field="<entry>", expected="missing", found="present"))
    return changes


# --- the reconciler ------------------------------------------------------------------------------


class ReconcileOutcome(str, Enum):
    CREATED = "created"  # first registration
    UPDATED = "updated"  # our own desired state changed (config, caBundle)
    RESTORED = "restored"  # someone else changed or deleted it: drift, logged as a security event
    IN_SYNC = "in_sync"


@dataclass(frozen=True)
class ReconcileResult:
    outcome: ReconcileOutcome
    changes: tuple[Change, ...] = ()


CaBundleRefresher = Callable[[], Awaitable[bytes]]
DriftCallback = Callable[[Sequence[Change]], None]  # e.g. a metrics counter; must not block


class WebhookConfigurationReconciler:
    """Keeps the live ValidatingWebhookConfiguration equal to the desired one.

    Drift is a difference from what this reconciler last applied or saw in
    sync; a difference because our own desired state changed (``set_ca_bundle``
    after a renewal) is an update. Before calling a difference drift,
    ``refresh_ca_bundle`` (if given) is asked for the current bundle: another
    replica may have rotated the certificate and updated the caBundle first.
    ``on_drift`` (if given) is called with the changes after each restore.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        registration: WebhookRegistration,
        ca_bundle: bytes,
        refresh_ca_bundle: CaBundleRefresher | None = None,
        on_drift: DriftCallback | None = None,
    ) -> None:
        self._api = kubernetes.client.AdmissionregistrationV1Api(api_client)
        self._on_drift = on_drift
        self.registration = registration
        self._ca_bundle = ca_bundle
        self._refresh_ca_bundle = refresh_ca_bundle
        self._last_applied: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.registration.name

    def set_ca_bundle(self, ca_bundle: bytes) -> None:
        """The bundle to register from now on; applied by the next ``reconcile_once``."""
        self._ca_bundle = ca_bundle

    def desired(self) -> dict[str, Any]:
        return self.registration.build(self._ca_bundle)

    async def reconcile_once(self) -> ReconcileResult:
        """Create, update or restore the configuration once. Raises KubernetesApiError."""
        async with self._lock:  # the periodic loop and a renewal callback may both call this
            return await self._reconcile()

    async def run(self, *, interval: float = 10.0, stop: asyncio.Event) -> None:
        """Reconcile every ``interval`` seconds until ``stop`` is set. Leaves the configuration in place."""
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except GatewatchError as error:  # API refusals, an unreadable certificate Secret
                logger.error("webhook configuration %s not reconciled, retrying in %ss: %s",
                             self.name, interval, error)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    async def _reconcile(self, attempts: int = 3) -> ReconcileResult:
        # Each round: read, compare, write with the read resourceVersion as precondition;
        # a 409 means someone wrote in between: look again.
        for _ in range(attempts):
            desired = self.desired()
            live = await self._read()
            changes = diff_webhook_configuration(desired, live)
            if changes and self._refresh_ca_bundle is not None and self._last_applied is not None:
                bundle = await self._refresh_ca_bundle()
                if bundle != self._ca_bundle:
                    self._ca_bundle = bundle
                    desired = self.desired()
                    changes = diff_webhook_configuration(desired, live)
            if not changes:
                self._last_applied = desired
                return ReconcileResult(ReconcileOutcome.IN_SYNC)
            if live is None:
                written = await self._create(desired)
            else:
                version = (live.get("metadata") or {}).get("resourceVersion")
                written = await self._replace(desired, resource_version=version)
            if written:
                return self._applied(desired, live=live, changes=changes)
        raise KubernetesApiError("kept conflicting with other writers", operation="update",
                                 kind="validatingwebhookconfiguration", name=self.name, status=409)

    def _applied(self, desired: dict[str, Any], *, live: Mapping[str, Any] | None,
                 changes: Sequence[Change]) -> ReconcileResult:
        # Drift: the live object differs from what we had applied (or seen in sync) before.
        previous, self._last_applied = self._last_applied, desired
        drift = diff_webhook_configuration(previous, live) if previous is not None else []
        if drift:
            self._log_drift(drift, deleted=live is None)
            return ReconcileResult(ReconcileOutcome.RESTORED, tuple(drift))
        if live is None:
            logger.info("registered ValidatingWebhookConfiguration %s (%d webhooks)", self.name,
                        len(desired["webhooks"]))
            return ReconcileResult(ReconcileOutcome.CREATED, tuple(changes))
        logger.info("updated ValidatingWebhookConfiguration %s: %s", self.name,
                    ", ".join(sorted({_where(change) for change in changes})))
        return ReconcileResult(ReconcileOutcome.UPDATED, tuple(changes))

    def _log_drift(self, drift: Sequence[Change], *, deleted: bool) -> None:
        record = {
            "event": "webhook_configuration_drift",
            "configuration": self.name,
            "kind": KIND,
            "action": "restored",
            "deleted": deleted,
            "changes": [change.as_dict() for change in drift],
        }
        # One JSON line: the message itself is the structured record; also attached for handlers.
        security_logger.warning(json.dumps(record, sort_keys=True, default=str),
                                extra={"gatewatch_security": record})
        if self._on_drift is not None:
            try:
                self._on_drift(drift)
            except Exception:
                logger.exception("drift callback failed")

    async def _read(self) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                response = self._api.read_validating_webhook_configuration(self.name, _preload_content=False)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return None
                raise api_error(error, operation="read", kind="validatingwebhookconfiguration",
                                name=self.name) from None
            return json.loads(response.data)

        return await asyncio.to_thread(call)

    async def _create(self, body: dict[str, Any]) -> bool:
        def call() -> bool:
            try:
                self._api.create_validating_webhook_configuration(body, _preload_content=False)
            except kubernetes.client.ApiException as error:
                if error.status == 409:
                    return False
                raise api_error(error, operation="create", kind="validatingwebhookconfiguration",
                                name=self.name) from None
            return True

        return await asyncio.to_thread(call)

    async def _replace(self, desired: dict[str, Any], *, resource_version: str | None) -> bool:
        body = json.loads(json.dumps(desired))
        if resource_version is not None:
            body["metadata"]["resourceVersion"] = resource_version  # precondition: 409 if changed since

        def call() -> bool:
            try:
                self._api.replace_validating_webhook_configuration(self.name, body, _preload_content=False)
            except kubernetes.client.ApiException as error:
                if error.status in (404, 409):
                    return False
                raise api_error(error, operation="update", kind="validatingwebhookconfiguration",
                                name=self.name) from None
            return True

        return await asyncio.to_thread(call)


async def delete_webhook_configuration(api_client: kubernetes.client.ApiClient, *, name: str) -> bool:
    """``gatewatch uninstall-webhook``: True if it was deleted, False if it was not there."""
    api = kubernetes.client.AdmissionregistrationV1Api(api_client)

    def call() -> bool:
        try:
            api.delete_validating_webhook_configuration(name, _preload_content=False)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return False
            raise api_error(error, operation="delete", kind="validatingwebhookconfiguration", name=name) from None
        return True

    deleted = await asyncio.to_thread(call)
    if deleted:
        logger.info("deleted ValidatingWebhookConfiguration %s", name)
    return deleted


def _where(change: Change) -> str:
    return change.field if change.webhook is None else f"{change.webhook}.{change.field}"


def _short(value: Any) -> Any:
    # caBundles are kilobytes of base64: log a digest, enough to tell two apart.
    if isinstance(value, str) and len(value) > 120:
        return f"sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    if isinstance(value, dict) and "caBundle" in value:
        return {**value, "caBundle": _short(value["caBundle"])}
    return value


__all__ = [
    "AdmissionHandler",
    "Change",
    "MatchCondition",
    "POD_IMAGES_CHANGED",
    "ReconcileOutcome",
    "ReconcileResult",
    "ServiceTarget",
    "WebhookConfigurationReconciler",
    "WebhookHandler",
    "WebhookRegistration",
    "build_webhook_configuration",
    "delete_webhook_configuration",
    "diff_webhook_configuration",
    "namespace_selector",
    "pod_images_changed_expression",
]
