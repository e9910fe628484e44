"""Keeping the configuration in place: create it, restore it after someone else's edit
or delete (logged as a security event, logger ``gatewatch.security``), never delete it
on shutdown, and stand back for a newer replica during a rolling upgrade.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Mapping, Sequence

import kubernetes.client

from gatewatch.errors import KubernetesApiError
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
from gatewatch.kube.webhook_configuration.desired import GENERATION_ANNOTATION, KIND, WebhookRegistration
from gatewatch.kube.webhook_configuration.drift import Change, diff_webhook_configuration

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("gatewatch.security")

# A rolling upgrade replaces every old replica well within this; an attacker who raises
# the generation annotation to switch restoring off buys at most this long. Well below
# the self-managed CA publish delay (600 s, kube/certificates/material.py): a new CA must be
# registered before it signs anything, even by a replica that stood back.
STAND_BACK_SECONDS = 300.0


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
                    ", ".join(sorted({change.where for change in changes})))
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
