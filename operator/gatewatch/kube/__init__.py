"""Everything that talks to the Kubernetes API besides kopf itself.

One module per idea: ``client`` (an ApiClient from in-cluster config or a
kubeconfig), ``certificates`` (the webhook's CA and serving certificate),
``webhook_configuration`` (the ValidatingWebhookConfiguration gatewatch
registers and keeps in place), ``namespaces`` (namespace modes), ``pods``
(exec/attach target pods), ``events`` (Kubernetes Events), ``newterms_store``
(persisted new_terms history).

The official ``kubernetes`` client is synchronous: callers run its calls in a
thread (``asyncio.to_thread``) so the webhook's event loop never blocks.
"""
