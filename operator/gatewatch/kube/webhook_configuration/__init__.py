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

One module for each step: ``desired`` (the object to register), ``drift``
(how the live one differs), ``reconciler`` (keeping it in place).
"""
from __future__ import annotations

from gatewatch.kube.webhook_configuration.desired import (
    AdmissionHandler,
    GENERATION_ANNOTATION,
    MatchCondition,
    POD_IMAGES_CHANGED,
    ServiceTarget,
    WebhookHandler,
    WebhookRegistration,
    build_webhook_configuration,
    pod_images_changed_expression,
    webhook_entry_name,
)
from gatewatch.kube.webhook_configuration.drift import (
    Change,
    diff_webhook_configuration,
)
from gatewatch.kube.webhook_configuration.reconciler import (
    ReconcileOutcome,
    ReconcileResult,
    STAND_BACK_SECONDS,
    WebhookConfigurationReconciler,
    delete_webhook_configuration,
)

__all__ = [
    "AdmissionHandler",
    "build_webhook_configuration",
    "Change",
    "delete_webhook_configuration",
    "diff_webhook_configuration",
    "GENERATION_ANNOTATION",
    "MatchCondition",
    "POD_IMAGES_CHANGED",
    "pod_images_changed_expression",
    "ReconcileOutcome",
    "ReconcileResult",
    "ServiceTarget",
    "STAND_BACK_SECONDS",
    "webhook_entry_name",
    "WebhookConfigurationReconciler",
    "WebhookHandler",
    "WebhookRegistration",
]
