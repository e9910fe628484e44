"""The ValidatingWebhookConfiguration gatewatch registers and keeps in place.

Managed by gatewatch, not by kopf: kopf's managed mode has no
namespaceSelector, hard-codes timeoutSeconds 30 and empties the webhooks on
every stop, which would drop enforcement during a rolling update.

- ``build_webhook_configuration(...)``: the desired object (pure): per handler,
  one entry per namespace class of ``gatewatch.namespace_modes`` (its
  namespaceSelector, its mode in the path, ``failurePolicy: Fail`` for enforce).
- ``POD_IMAGES_CHANGED``: the CEL match condition that sends a pod UPDATE to
  gatewatch only when it changes a container image.
- ``diff_webhook_configuration(desired, live)``: what differs (pure).
- ``WebhookConfigurationReconciler``: creates it, keeps it as desired, and
  restores it when someone else edits or deletes it, logging that drift as a
  security event (logger ``gatewatch.security``). It never deletes it: on
  shutdown the configuration stays, so the next replica finds it in place.
  During a rolling upgrade old and new replicas want different configurations:
  the configuration carries the writer's generation (``gatewatch.io/generation``,
  the Helm release revision) and an older replica stands back for a newer one,
  for at most ``STAND_BACK_SECONDS``.
- ``delete_webhook_configuration(...)``: ``gatewatch uninstall-webhook``.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Literal, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

import kubernetes.client

from gatewatch.config import Settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError, KubernetesApiError
from gatewatch.kube import rest
from gatewatch.kube.ca_bundles import (
    FOREIGN_CA_GRACE_SECONDS,
    certificate_fingerprint,
    is_expired,
    load_certificate,
    pem_certificates,
    unite_ca_bundles,
)
from gatewatch.kube.client import REQUEST_TIMEOUT_SECONDS, api_error
from gatewatch.namespace_modes import ModePolicy, NamespaceClass

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("gatewatch.security")

FailurePolicy = Literal["Ignore", "Fail"]
WEBHOOK_NAME_SUFFIX = "gatewatch.io"  # webhook entry names must be qualified: pods-exec.gatewatch.io
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "gatewatch"}
API_VERSION = "admissionregistration.k8s.io/v1"
KIND = "ValidatingWebhookConfiguration"
GENERATION_ANNOTATION = "gatewatch.io/generation"
# A rolling upgrade replaces every old replica well within this; an attacker who raises
# the generation annotation to switch restoring off buys at most this long. Well below
# the self-managed CA publish delay (600 s, kube/certificates.py): a new CA must be
# registered before it signs anything, even by a replica that stood back.
STAND_BACK_SECONDS = 300.0


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
    STOOD_BACK = "stood_back"  # a newer generation of gatewatch manages it (rolling upgrade)
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

    ``generation`` orders the gatewatch versions of a rolling upgrade: a live
    configuration stamped with a higher one is left alone (not drift) for up to
    ``stand_back_seconds`` per continuous episode, then restored as drift; a
    lower or missing one is updated. ``ca_bundle_union`` (files mode, where each
    replica's mounted Secret changes at its own time during a CA rotation): the
    registered bundle is ours plus the foreign CAs ``unite_ca_bundles`` keeps
    (accepted only from every webhook entry, logged as a WARNING when first
    accepted); a CA of ours the live bundle lacks is added, even while standing
    back for a newer generation.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        registration: WebhookRegistration,
        ca_bundle: bytes,
        refresh_ca_bundle: CaBundleRefresher | None = None,
        on_drift: DriftCallback | None = None,
        generation: int = 0,
        stand_back_seconds: float = STAND_BACK_SECONDS,
        ca_bundle_union: bool = False,
        foreign_ca_grace_seconds: float = FOREIGN_CA_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._api_client = api_client
        # Every call is bounded: a blackholed API server must not hold a worker thread for good.
        self._timeout = request_timeout
        self._on_drift = on_drift
        self.registration = registration
        self.generation = generation
        self._ca_bundle = ca_bundle
        self._refresh_ca_bundle = refresh_ca_bundle
        self._last_applied: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._stand_back_seconds = stand_back_seconds
        self._clock = clock
        self._now = now
        self._standing_back_since: float | None = None  # start of the current episode
        self._stood_back_for: int | None = None  # the newest generation seen in it
        self._ca_bundle_union = ca_bundle_union
        self._foreign_ca_grace_seconds = foreign_ca_grace_seconds
        self._foreign_ca_first_seen: dict[bytes, float] = {}  # accepted foreign CAs still in the live bundle
        self._foreign_cas_dropped: set[bytes] = set()  # trimmed by us: if one comes back, someone serves with it
        self._pending_trim: tuple[bytes, ...] = ()  # trimmed by the last desired(), logged once written
        self._cas_served_with: set[bytes] = set()  # ours, now or before a rotation: nothing to warn about

    @property
    def name(self) -> str:
        return self.registration.name

    def set_ca_bundle(self, ca_bundle: bytes) -> None:
        """The bundle to register from now on; applied by the next ``reconcile_once``."""
        self._ca_bundle = ca_bundle

    def desired(self, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What to register given the ``live`` configuration (which matters only with ``ca_bundle_union``).

        With ``ca_bundle_union`` this also updates what the reconciler remembers of foreign CAs
        (and logs a newly accepted one): call it once per read of the live configuration.
        """
        self._pending_trim = ()
        bundle = self._united_ca_bundle(live) if self._ca_bundle_union and live is not None else self._ca_bundle
        configuration = self.registration.build(bundle)
        configuration["metadata"]["annotations"] = {GENERATION_ANNOTATION: str(self.generation)}
        return configuration

    async def reconcile_once(self) -> ReconcileResult:
        """Create, update or restore the configuration once. Raises KubernetesApiError."""
        async with self._lock:  # the periodic loop and a renewal callback may both call this
            return await self._reconcile()

    async def _reconcile(self, attempts: int = 3) -> ReconcileResult:
        # Each round: read, compare, write with the read resourceVersion as precondition;
        # a 409 means someone wrote in between: look again.
        for _ in range(attempts):
            live = await self._read()
            desired = self.desired(live)
            changes = diff_webhook_configuration(desired, live)
            # Also on the first round: a replica that just started must not revert a
            # bundle another replica rotated meanwhile (that replica would call it drift).
            if changes and self._refresh_ca_bundle is not None:
                bundle = await self._refresh_ca_bundle()
                if bundle != self._ca_bundle:
                    self._ca_bundle = bundle
                    desired = self.desired(live)
                    changes = diff_webhook_configuration(desired, live)
            live_generation = _generation(live)
            if live_generation is not None and live_generation > self.generation:
                if not changes:  # the newer generation wants what we want: nothing to fight over, nothing to log
                    self._standing_back_since = self._stood_back_for = None
                    self._last_applied = desired
                    return ReconcileResult(ReconcileOutcome.IN_SYNC)
                with_own_cas = self._with_own_cas(live)
                if with_own_cas is not None:
                    # Our mount has a CA the bundle lacks: register it now, leave the rest to the newer generation.
                    if await self._replace(with_own_cas, resource_version=_resource_version(live)):
                        logger.info("ValidatingWebhookConfiguration %s: added this replica's CA to the caBundle "
                                    "of generation %d", self.name, live_generation)
                        return ReconcileResult(ReconcileOutcome.UPDATED, tuple(changes))
                    continue
                if self._standing_back(live_generation, changes, live=live):
                    return ReconcileResult(ReconcileOutcome.STOOD_BACK, tuple(changes))
                written = await self._replace(desired, resource_version=_resource_version(live))
                if written:
                    self._trim_written()
                    return self._restored_after_standing_back(desired, live=live, changes=changes)
                continue
            self._standing_back_since = self._stood_back_for = None
            if live is not None and (live_generation is None or live_generation < self.generation):
                # Stamp it even when the webhooks are equal: older replicas must see that we manage it.
                changes.append(Change(webhook=None, field=f"annotations[{GENERATION_ANNOTATION}]",
                                      expected=str(self.generation), found=_annotation(live)))
            if not changes:
                self._last_applied = desired
                return ReconcileResult(ReconcileOutcome.IN_SYNC)
            if live is None:
                written = await self._create(desired)
            else:
                written = await self._replace(desired, resource_version=_resource_version(live))
            if written:
                self._trim_written()
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

    def _standing_back(self, live_generation: int, changes: Sequence[Change], *,
                       live: Mapping[str, Any]) -> bool:
        """True while this replica may leave a newer generation's configuration alone."""
        now = self._clock()
        if self._standing_back_since is None:
            self._standing_back_since = now
        if self._stood_back_for != live_generation:
            # First sight of this generation: normal in an upgrade, but also what an attacker
            # who raises the annotation to stop the restoring would cause: leave a record.
            self._stood_back_for = live_generation
            logger.info("ValidatingWebhookConfiguration %s: standing back for generation %d (mine: %d)",
                        self.name, live_generation, self.generation)
            annotation = Change(webhook=None, field=f"annotations[{GENERATION_ANNOTATION}]",
                                expected=str(self.generation), found=_annotation(live))
            self._log_security("webhook_configuration_newer_generation", action="stood_back",
                               changes=[annotation, *changes], live_generation=live_generation,
                               generation=self.generation, stand_back_seconds=self._stand_back_seconds)
        return now - self._standing_back_since < self._stand_back_seconds

    def _restored_after_standing_back(self, desired: dict[str, Any], *, live: Mapping[str, Any],
                                      changes: Sequence[Change]) -> ReconcileResult:
        # No newer replica took over in time: whoever set that generation, it is drift now.
        self._last_applied = desired
        self._standing_back_since = self._stood_back_for = None
        self._log_drift(changes, deleted=False, live_generation=_generation(live))
        return ReconcileResult(ReconcileOutcome.RESTORED, tuple(changes))

    def _log_drift(self, drift: Sequence[Change], *, deleted: bool, **details: Any) -> None:
        self._log_security("webhook_configuration_drift", action="restored", changes=drift,
                           deleted=deleted, **details)
        if self._on_drift is not None:
            try:
                self._on_drift(drift)
            except Exception:
                logger.exception("drift callback failed")

    def _log_security(self, event: str, *, action: str, changes: Sequence[Change],
                      level: int = logging.WARNING, **details: Any) -> None:
        record = {
            "event": event,
            "configuration": self.name,
            "kind": KIND,
            "action": action,
            **details,
            "changes": [change.as_dict() for change in changes],
        }
        # One JSON line: the message itself is the structured record; also attached for handlers.
        security_logger.log(level, json.dumps(record, sort_keys=True, default=str),
                            extra={"gatewatch_security": record})

    def _united_ca_bundle(self, live: Mapping[str, Any]) -> bytes:
        """Ours plus the foreign CAs ``unite_ca_bundles`` keeps; updates what this replica remembers of them."""
        own = pem_certificates(self._ca_bundle)
        if not own:  # not PEM (never from a mounted Secret): register it as is, keep nothing
            self._pending_trim = ()
            return self._ca_bundle
        clock_now, wall_now = self._clock(), self._now()
        self._foreign_cas_dropped = {pem for pem in self._foreign_cas_dropped if not is_expired(pem, wall_now)}
        united = unite_ca_bundles(
            own=own, live_bundles=[pem_certificates(bundle) for bundle in _live_ca_bundles(live)],
            accepted_before=self._foreign_ca_first_seen, dropped_before=self._foreign_cas_dropped,
            clock_now=clock_now, now=wall_now, grace_seconds=self._foreign_ca_grace_seconds,
        )
        for pem in united.accepted:
            if pem not in self._foreign_ca_first_seen and pem not in self._cas_served_with:
                self._log_foreign_ca(pem, readmitted=pem in self._foreign_cas_dropped)
        self._cas_served_with = {pem for pem in {*self._cas_served_with, *own} if not is_expired(pem, wall_now)}
        self._foreign_ca_first_seen = {pem: self._foreign_ca_first_seen.get(pem, clock_now)
                                       for pem in (*united.accepted, *united.trimmed)}
        self._pending_trim = united.trimmed
        return united.bundle

    def _log_foreign_ca(self, pem: bytes, *, readmitted: bool) -> None:
        # Another replica ahead in a rotation looks exactly like this, and so does someone adding a CA.
        certificate = load_certificate(pem)
        self._log_security(
            "webhook_configuration_foreign_ca", action="accepted", changes=(), fingerprint=certificate_fingerprint(pem),
            readmitted=readmitted,
            subject=certificate.subject.rfc4514_string() if certificate else None,
            not_before=certificate.not_valid_before_utc.isoformat() if certificate else None,
            not_after=certificate.not_valid_after_utc.isoformat() if certificate else None,
        )

    def _trim_written(self) -> None:
        # Only now trimmed: from here on, a trimmed CA that comes back was put back by a replica serving with it.
        if not self._pending_trim:
            return
        self._log_security("webhook_configuration_ca_trimmed", action="trimmed", changes=(), level=logging.INFO,
                           certificates=[certificate_fingerprint(pem) for pem in self._pending_trim])
        for pem in self._pending_trim:
            self._foreign_ca_first_seen.pop(pem, None)
            self._foreign_cas_dropped.add(pem)
        self._pending_trim = ()

    def _with_own_cas(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live configuration with our CAs added to every entry that lacks one; None if none does (files mode)."""
        own = pem_certificates(self._ca_bundle)
        if not self._ca_bundle_union or not own:
            return None
        configuration = json.loads(json.dumps(live))
        added = False
        entries = configuration.get("webhooks") or []
        for entry, bundle in zip(entries, _live_ca_bundles(configuration)):
            client_config = entry.get("clientConfig") if isinstance(entry, dict) else None
            if not isinstance(client_config, dict):
                continue
            present = pem_certificates(bundle)
            missing = [pem for pem in own if pem not in present]
            if missing:
                client_config["caBundle"] = base64.b64encode(b"".join(present + missing)).decode("ascii")
                added = True
        return configuration if added else None

    async def _read(self) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return rest.read_validating_webhook_configuration(self._api_client, self.name,
                                                                  timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return None
                raise api_error(error, operation="read", kind="validatingwebhookconfiguration",
                                name=self.name) from None

        return await asyncio.to_thread(call)

    async def _create(self, body: dict[str, Any]) -> bool:
        def call() -> bool:
            try:
                rest.create_validating_webhook_configuration(self._api_client, body, timeout=self._timeout)
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
                rest.replace_validating_webhook_configuration(self._api_client, self.name, body,
                                                              timeout=self._timeout)
            except kubernetes.client.ApiException as error:
                if error.status in (404, 409):
                    return False
                raise api_error(error, operation="update", kind="validatingwebhookconfiguration",
                                name=self.name) from None
            return True

        return await asyncio.to_thread(call)


async def delete_webhook_configuration(api_client: kubernetes.client.ApiClient, *, name: str) -> bool:
    """``gatewatch uninstall-webhook``: True if it was deleted, False if it was not there."""
    def call() -> bool:
        try:
            rest.delete_validating_webhook_configuration(api_client, name)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return False
            raise api_error(error, operation="delete", kind="validatingwebhookconfiguration", name=name) from None
        return True

    deleted = await asyncio.to_thread(call)
    if deleted:
        logger.info("deleted ValidatingWebhookConfiguration %s", name)
    return deleted


def _resource_version(live: Mapping[str, Any] | None) -> str | None:
    return ((live or {}).get("metadata") or {}).get("resourceVersion")


def _annotation(live: Mapping[str, Any] | None) -> str | None:
    return (((live or {}).get("metadata") or {}).get("annotations") or {}).get(GENERATION_ANNOTATION)


def _generation(live: Mapping[str, Any] | None) -> int | None:
    """The live configuration's generation; None when absent or not a number (written before generations)."""
    value = _annotation(live)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _live_ca_bundles(live: Mapping[str, Any]) -> list[bytes]:
    """Each webhook entry's decoded caBundle, in entry order; empty when missing or not base64."""
    bundles = []
    for entry in live.get("webhooks") or []:
        encoded = ((entry or {}).get("clientConfig") or {}).get("caBundle") if isinstance(entry, Mapping) else None
        try:
            bundles.append(base64.b64decode(encoded or "", validate=True) + b"\n")
        except (ValueError, TypeError):
            bundles.append(b"")  # nothing to keep from it
    return bundles


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
    "GENERATION_ANNOTATION",
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
    "pod_images_changed_expression",
]
