"""Answer one AdmissionReview.

    AdmissionReview -> document -> rules -> matches -> decision -> response

``check_review`` refuses what no handler takes (path, resource, operation,
unreadable body); :class:`AdmissionReviewer` turns the rest into a
:class:`~gatewatch.decision.Decision`, the response's content (allowed,
warnings, denial message). Alerts and Events are handed to non-blocking sinks
(bounded queues) as functions that build them: the review path only queues the
match and its document; the sinks' workers build, encode and send. A review's
alerts share their audit part, redacted and encoded once.

Nothing here knows kopf: ``gatewatch.controller``'s webhook server calls
:func:`check_review`, :class:`AdmissionReviewer` and :func:`review_response`
(the AdmissionReview response, in the shape kopf's own handlers gave).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

from gatewatch.alerts import SharedAuditPart, shared_alert_line
from gatewatch.decision import Decision, Mode, decide
from gatewatch.documents import (
    AdmissionRequest,
    document_from_admission_request,
    document_from_pod,
    parse_admission_request,
)
from gatewatch.engine import RuleEngine
from gatewatch.errors import InputError
from gatewatch.kube.events import EventSource, MatchOccurrence, Operation
from gatewatch.kube.namespaces import NamespaceMode, NamespaceModeResolver
from gatewatch.kube.pods import PodLookup, PodLookupResult
from gatewatch.kube.webhook_configuration import POD_IMAGES_CHANGED, MatchCondition
from gatewatch.metrics import Metrics
from gatewatch.rules.model import Action
from gatewatch.workloads import pod_from_workload

logger = logging.getLogger(__name__)


# --- which reviews gatewatch answers ---------------------------------------------------------


@dataclass(frozen=True)
class WebhookRoute:
    """One admission handler: served at ``{path}/{handler_id}`` (and ``{path}/{handler_id}/{mode}``),
    registered for one resource."""

    handler_id: str
    subresource: str | None
    operations: tuple[str, ...]
    resource: str = "pods"
    api_group: str = ""
    api_version: str = "v1"
    # CEL conditions the API server checks before calling (the webhook's matchConditions).
    match_conditions: tuple[MatchCondition, ...] = ()
    # Namespaced resources' reviews must name their namespace (its mode decides).
    namespaced: bool = True
    # The namespace mode of the webhook entries that call this route's path (one entry per
    # handler and mode, kube/webhook_configuration/desired.py); None for the bare path.
    entry_mode: Mode | None = None
    # A workload: its Pod template is evaluated as the Pod it creates, for warnings only.
    pod_template: bool = False

    @property
    def never_denies(self) -> bool:
        """Answered with warnings at most: registered with failurePolicy Ignore whatever the setting
        (refusing the request while gatewatch is down would deny what gatewatch never denies)."""
        return self.pod_template

    @property
    def path(self) -> str:
        """Where it is served, under ``webhook.path``: ``pods``, or ``pods/enforce`` for an entry's mode."""
        return self.handler_id if self.entry_mode is None else f"{self.handler_id}/{self.entry_mode.value}"

    @property
    def scope(self) -> str:
        """The webhook rule's scope: "Cluster" (nodes/proxy) gets no namespaceSelector."""
        return "Namespaced" if self.namespaced else "Cluster"

    @property
    def resource_path(self) -> str:
        """``pods`` or ``pods/exec``: the webhook rule's resource and the metrics label."""
        return self.resource if self.subresource is None else f"{self.resource}/{self.subresource}"

    @property
    def body_objects(self) -> int:
        """Whole objects one review carries at most, which sizes the body read (server.limits):
        an UPDATE has object and oldObject, a CREATE or DELETE one, a CONNECT only options (0)."""
        if "UPDATE" in self.operations:
            return 2
        return 1 if {"CREATE", "DELETE"} & set(self.operations) else 0


WEBHOOK_ROUTES: tuple[WebhookRoute, ...] = (
    WebhookRoute("pods", None, ("CREATE",)),
    # `kubectl set image pod/...`: only updates that change an image reach gatewatch.
    WebhookRoute("pods-update", None, ("UPDATE",), match_conditions=(POD_IMAGES_CHANGED,)),
    WebhookRoute("pods-exec", "exec", ("CONNECT",)),
    WebhookRoute("pods-attach", "attach", ("CONNECT",)),
    WebhookRoute("pods-ephemeralcontainers", "ephemeralcontainers", ("UPDATE",)),
    # Access paths (docs/operations.md, "Port-forward and proxy"): every HTTP method of a
    # proxy request, and port-forward over SPDY or websocket, reach admission as CONNECT.
    WebhookRoute("pods-portforward", "portforward", ("CONNECT",)),
    WebhookRoute("pods-proxy", "proxy", ("CONNECT",)),
    WebhookRoute("nodes-proxy", "proxy", ("CONNECT",), resource="nodes", namespaced=False),
    # Workloads: the Pods their templates create get a warning before the controller creates them
    # (as Pod Security Admission gives one); the Pods themselves are where enforcement happens.
    *(
        WebhookRoute(resource, None, ("CREATE", "UPDATE"), resource=resource, api_group=group, pod_template=True)
        for group, resource in (
            ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
            ("batch", "jobs"), ("batch", "cronjobs"), ("", "replicationcontrollers"),
        )
    ),
)
ROUTES_BY_ID = {route.handler_id: route for route in WEBHOOK_ROUTES}
# Each route is also served at {handler_id}/{mode}, the path the webhook entry of namespaces
# in that mode calls: so the API server tells gatewatch the namespace's mode with every
# review, even when gatewatch cannot read the namespace's labels (kube/namespaces.py).
ROUTES_BY_PATH = {route.path: route for route in (
    *WEBHOOK_ROUTES,
    *(replace(route, entry_mode=mode) for route in WEBHOOK_ROUTES for mode in Mode if mode is not Mode.OFF),
)}


def resolve_route(handler: str) -> WebhookRoute | None:
    """The route served at ``{webhook.path}/{handler}``, or None: looked up before any body is read."""
    return ROUTES_BY_PATH.get(handler)


# exec/attach/portforward/proxy of a pod carry only their options: the pod is looked up.
POD_LOOKUP_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})


class RejectedReview(Exception):
    """A webhook call gatewatch does not evaluate; answered with ``status``, never with an allow."""

    status = 400


class UnknownWebhookPath(RejectedReview):
    """A path under the webhook prefix with no gatewatch handler."""

    status = 404


class UnexpectedReview(RejectedReview):
    """A review this path does not take (resource, operation), or that cannot be read."""


@dataclass(slots=True)  # not frozen: one per review, and a frozen dataclass costs several times as much to build
class CheckedReview:
    """A review its route takes: the route and the validated request (and for a workload, its
    template's Pod, as ``gatewatch check`` derives it)."""

    route: WebhookRoute
    request: AdmissionRequest
    # A workload's: its template's Pod, as ``gatewatch check`` derives it.
    pod: Mapping[str, Any] | None = None

    @property
    def entry_mode(self) -> Mode | None:
        """The mode of the webhook entry that called (its path), None for a bare path."""
        return self.route.entry_mode


def check_review(review: Any, *, webhook: str | None = None, route: WebhookRoute | None = None) -> CheckedReview:
    """The checks before anything is evaluated, for the route ``webhook`` names (or ``route``);
    raises UnknownWebhookPath / UnexpectedReview, whose message says what is wrong."""
    if route is None:
        route = resolve_route(webhook or "")
        if route is None:
            raise UnknownWebhookPath(f"gatewatch serves no webhook at {webhook!r}")
    try:
        if type(review) is not dict and not isinstance(review, Mapping):  # dict first: the ABC check costs more
            raise InputError(f"expected a JSON object, got {_json_type(review)}")
        if "request" not in review:
            # The wire format is always the wrapped review (kopf reads review["request"]).
            raise InputError("request: missing")
        request = parse_admission_request(review)
    except InputError as error:
        raise UnexpectedReview(f"not a readable AdmissionReview: {error.reason}") from None
    except (TypeError, ValueError) as error:  # e.g. a JSON list where a string belongs: still a 400
        raise UnexpectedReview(f"not a readable AdmissionReview: {type(error).__name__}: {error}") from None
    if route.namespaced and not request.get("namespace"):
        raise UnexpectedReview("not a readable AdmissionReview: request.namespace missing for a namespaced "
                               f"resource ({route.resource_path})")
    resource = request["resource"]
    got = (resource.get("group", ""), resource.get("resource"), request.get("subResource") or None)
    expected = (route.api_group, route.resource, route.subresource)
    if got != expected:
        raise UnexpectedReview(
            f"webhook {route.handler_id!r} takes {route.resource_path}, not "
            f"{got[1]}{'/' + got[2] if got[2] else ''} (group {got[0]!r})"
        )
    operation = request["operation"]
    if operation not in route.operations:
        raise UnexpectedReview(
            f"webhook {route.handler_id!r} takes {'/'.join(route.operations)}, not {operation!r}"
        )
    pod = _template_pod(request) if route.pod_template else None
    return CheckedReview(route=route, request=request, pod=pod)


def _json_type(value: Any) -> str:
    return {type(None): "null", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _template_pod(request: AdmissionRequest) -> Mapping[str, Any]:
    """The Pod a workload's template creates (workloads.pod_from_workload, as ``gatewatch check``)."""
    workload = request.get("object") or {}
    try:
        # The request names the kind; the object may leave it out.
        return pod_from_workload({**workload, "kind": request["kind"]["kind"]})
    except InputError as error:
        raise UnexpectedReview(f"not a workload with a Pod template: {error}") from None


# --- the answer ------------------------------------------------------------------------------

DENIAL_FALLBACK = "gatewatch denied this request"


def review_response(review: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The AdmissionReview response for ``decision``, in the shape kopf's ``build_response`` gives:
    the request's apiVersion/kind and uid, ``allowed``, ``warnings`` when there are any, and for a
    denial ``status: {message, code: 403}``."""
    request = review.get("request") or {}
    payload: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": decision.allowed}
    if decision.warnings:
        payload["warnings"] = [str(warning) for warning in decision.warnings]
    if not decision.allowed:
        payload["status"] = {"message": decision.message or DENIAL_FALLBACK, "code": 403}
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": payload,
    }


class AlertSink(Protocol):
    """Takes an alert, or a function that builds it or its JSON line, without blocking (``alert_sinks``:
    a bounded queue)."""

    def emit(self, alert: Mapping[str, Any] | Callable[[], Mapping[str, Any] | str]) -> bool: ...


class EventSink(Protocol):
    """Takes a Kubernetes Event to post, a match to make one of, or a function that builds it, without
    blocking (``kube.events.EventRecorder``)."""

    def submit(self, request: EventSource) -> bool: ...


class AdmissionReviewer:
    """A checked review -> its decision; alerts and Events to the sinks; metrics.

    Nothing is awaited but the namespace-mode and target-pod lookups (cached).
    """

    def __init__(
        self,
        *,
        engine: RuleEngine,
        namespace_modes: NamespaceModeResolver,
        pod_lookup: PodLookup,
        metrics: Metrics,
        alerts: AlertSink | None = None,
        event_sink: EventSink | None = None,
        alert_dry_runs: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.engine = engine
        self._alert_dry_runs = alert_dry_runs
        self.namespace_modes = namespace_modes
        self.pod_lookup = pod_lookup
        self.metrics = metrics
        self.alerts = alerts
        self.event_sink = event_sink
        self._clock = clock

    async def review(self, checked: CheckedReview) -> Decision:
        """AdmissionReview -> document -> rules -> matches -> decision (the response's content)."""
        request = checked.request
        namespace_mode = await self._namespace_mode(request, entry_mode=checked.entry_mode)
        mode = namespace_mode.mode if namespace_mode is not None else Mode.OFF
        if mode is Mode.OFF:
            # Nothing to evaluate: no match could cause anything, and no history is written.
            return Decision(mode=mode, allowed=True)

        now = self._clock()
        if checked.pod is not None:
            return self._review_pod_template(checked, mode=mode, now=now)
        dry_run = bool(request.get("dryRun"))
        # check_review's parse checked the request: its Pod objects are not checked a second time.
        document = document_from_admission_request(request, now=now, pod_fields=self.engine.reads_pod_fields,
                                                   checked=True)
        pod_lookup = await self._add_target_pod(checked, document)
        matches = self.engine.evaluate(document, now=now, record=not dry_run)
        decision = decide(matches, mode=mode)
        self._count_matches(decision)
        if decision.outcomes and dry_run and not self._alert_dry_runs:
            # The same answer, no side effects (sideEffects: NoneOnDryRun): only gatewatch's own log says it.
            logger.info("dry-run %s review %s matched %s: no Event, no alert (alerts.dryRun is false)",
                        checked.route.resource_path, request.get("uid"),
                        ", ".join(outcome.match.rule.id for outcome in decision.outcomes))
        elif decision.outcomes:
            # A dry run reported here (alerts.dryRun) gets an alert tagged gatewatch.dry_run and no Event.
            self._report(checked, decision, document, namespace_mode=namespace_mode, pod_lookup=pod_lookup,
                         now=now, dry_run=dry_run)
        return decision

    def _review_pod_template(self, checked: CheckedReview, *, mode: Mode, now: datetime) -> Decision:
        """A workload: its template's Pod evaluated as the Pod CREATE it will cause, warnings only.

        The same Pod and document ``gatewatch check`` evaluates, by the requesting user. Never a
        denial (the Pods are where enforcement happens), no Event and no alert (each Pod gets its
        own), no new_terms history (no Pod was created), not counted as rule matches.
        """
        request = checked.request
        assert checked.pod is not None
        document = document_from_pod(
            checked.pod, namespace=request.get("namespace"), user=request.get("userInfo"), now=now,
            workload_kind=request["kind"]["kind"], source="admission", pod_fields=self.engine.reads_pod_fields,
        )
        matches = self.engine.evaluate(document, now=now, record=False)
        return decide(matches, mode=mode, strongest=Action.WARN, about="pod template")

    async def _namespace_mode(self, request: AdmissionRequest, *, entry_mode: Mode | None) -> NamespaceMode | None:
        namespace = request.get("namespace")
        if not namespace:
            # nodes/proxy: a node runs pods of every namespace, so the strongest mode the
            # configuration gives any of them (labels do not count: tenants may not set it).
            return self.namespace_modes.resolve_cluster_scoped(entry_mode=entry_mode)
        namespace_mode = await self.namespace_modes.resolve(namespace, entry_mode=entry_mode)
        if namespace_mode.labels_error:
            self.metrics.lookup_failures.labels(kind="namespace").inc()
        return namespace_mode

    async def _add_target_pod(self, checked: CheckedReview, document: dict[str, Any]) -> PodLookupResult | None:
        """exec/attach: the target pod's images, labels and service account go into the document."""
        if checked.route.resource != "pods" or checked.route.subresource not in POD_LOOKUP_SUBRESOURCES:
            return None
        request = checked.request
        pod_lookup = await self.pod_lookup.lookup(namespace=request.get("namespace"), name=target_pod_name(request))
        if pod_lookup.pod is not None:
            document.setdefault("gatewatch", {})["pod"] = dict(pod_lookup.pod)
        else:
            self.metrics.lookup_failures.labels(kind="pod").inc()
        return pod_lookup

    def _count_matches(self, decision: Decision) -> None:
        for outcome in decision.outcomes:
            rule = outcome.match.rule
            self.metrics.count_match(
                rule_id=rule.id, rule_name=rule.name, action=_value(rule.action), effect=_value(outcome.effect))

    def _report(
        self,
        checked: CheckedReview,
        decision: Decision,
        document: Mapping[str, Any],
        *,
        namespace_mode: NamespaceMode | None,
        pod_lookup: PodLookupResult | None,
        now: datetime,
        dry_run: bool,
    ) -> None:
        """One alert and (unless dry-run) one Event per outcome, handed to the sinks as functions
        that build them: the sinks' workers build them, off the review path."""
        target = None if dry_run else event_target(checked.request, pod_lookup=pod_lookup)
        extra = _alert_context(namespace_mode=namespace_mode, pod_lookup=pod_lookup)
        if dry_run:
            extra["dry_run"] = True
        verdict = "allowed" if decision.allowed else "denied"
        # The review's alerts carry the same audit part: the first one built redacts and encodes it for all.
        audit = SharedAuditPart(document)
        for outcome in decision.outcomes:
            # Queues never block; a failing sink must not fail the review.
            if self.alerts is not None:
                alert = functools.partial(
                    shared_alert_line, outcome.match, document, audit=audit, effect=outcome.effect,
                    mode=decision.mode, decision=verdict, now=now, extra=extra,
                )
                _safely(self.alerts.emit, alert, what="alert sink")
            if self.event_sink is not None and target is not None:
                # The worker builds the Event (match_event) only if this match starts a series.
                event = MatchOccurrence(
                    rule=outcome.match.rule, effect=outcome.effect, operation=target.operation,
                    namespace=target.namespace, pod_name=target.pod_name, user=target.user,
                    pod_uid=target.pod_uid, mode=decision.mode, observed_at=now,
                )
                _safely(self.event_sink.submit, event, what="event recorder")


def _alert_context(
    *, namespace_mode: NamespaceMode | None, pod_lookup: PodLookupResult | None
) -> dict[str, Any]:
    """The alert's ``gatewatch`` extras: how the mode was chosen, and what the lookups found."""
    extra: dict[str, Any] = {}
    if pod_lookup is not None:
        extra.update(pod_lookup.alert_fields())
        if pod_lookup.pod is not None:
            extra["pod"] = dict(pod_lookup.pod)
    if namespace_mode is not None:
        extra.update(namespace_mode.alert_fields())
    return extra


@dataclass(slots=True)  # not frozen: one per matching review (as CheckedReview)
class EventTarget:
    """The pod an Event regards, and who asked."""

    operation: Operation
    namespace: str
    pod_name: str
    user: str
    pod_uid: str | None = None


def event_target(
    request: Mapping[str, Any], *, pod_lookup: PodLookupResult | None = None
) -> EventTarget | None:
    """The pod a review's Events regard; None when the request names none (no Event then)."""
    namespace = request.get("namespace")
    user = str((request.get("userInfo") or {}).get("username") or "unknown")
    subresource = request.get("subResource") or None
    metadata = (request.get("object") or {}).get("metadata") or {}
    if subresource is None and request.get("operation") == "UPDATE":
        # e.g. `kubectl set image pod/...`: the pod exists, with its uid.
        name = request.get("name") or metadata.get("name")
        operation: Operation = "update"
        uid = metadata.get("uid")
    elif subresource is None:
        # A pod being created may have only generateName (the API server names it later).
        name = request.get("name") or metadata.get("name") or metadata.get("generateName")
        operation = "create"
        uid = None
    else:
        name = target_pod_name(request)
        operation = subresource  # exec, attach, ephemeralcontainers, portforward, proxy
        uid = metadata.get("uid")
        if uid is None and pod_lookup is not None and pod_lookup.pod is not None:
            uid = pod_lookup.pod["uid"]
    if not namespace or not name:
        return None
    return EventTarget(operation=operation, namespace=namespace, pod_name=name, user=user, pod_uid=uid)


def target_pod_name(request: Mapping[str, Any]) -> str | None:
    """The pod a subresource request names. A pods/proxy name may carry a scheme and port
    (``web:8080``, ``https:web:8443``, as kube-apiserver's SplitSchemeNamePort reads it); the
    document keeps the name as the audit log does, the lookup and the Event need the pod's."""
    name = request.get("name")
    if request.get("subResource") != "proxy" or not isinstance(name, str) or ":" not in name:
        return name
    parts = name.split(":")
    if len(parts) == 2:
        return parts[0]
    if len(parts) == 3 and parts[0] in ("", "http", "https"):
        return parts[1]
    return name


def _safely(call: Callable[..., Any], *args: Any, what: str) -> None:
    try:
        call(*args)
    except Exception:
        logger.exception("%s failed; the review goes on", what)


def _value(value: Any) -> str:
    return str(getattr(value, "value", value))


__all__ = [
    "AdmissionReviewer",
    "AlertSink",
    "CheckedReview",
    "ROUTES_BY_PATH",
    "EventSink",
    "EventTarget",
    "POD_LOOKUP_SUBRESOURCES",
    "ROUTES_BY_ID",
    "RejectedReview",
    "UnexpectedReview",
    "UnknownWebhookPath",
    "WEBHOOK_ROUTES",
    "WebhookRoute",
    "check_review",
    "event_target",
    "resolve_route",
    "review_response",
    "target_pod_name",
]
