"""The HTTPS webhook server: every call bounded in work and time, answered or refused, never allowed unevaluated.

A call's way through, each step before the next costs anything:

    connection   admitted within server.limits.maxConnections, TLS and headers within
                 headerTimeoutSeconds (webhook_listener)
    route        method and path -> a WebhookRoute, or 405/404 (the body is never read)
    size         Content-Length above the route's limit -> 413 (never read)
    body         read within the deadline, into the bodies gate when over 64 KiB
                 (bufferedBodyBytes); a slow sender gets 408
    JSON         measured before parsing (maxJsonDepth, maxJsonValues) -> 400 with what is wrong
    review       into the reviews gate (concurrentReviews, jsonValuesInFlight; a full line: 429),
                 parsed, admission.check_review (400), AdmissionReviewer.review
    answer       admission.review_response; an evaluation error is 500, the deadline
                 (webhook.timeoutSeconds - 1 by default) passing is 503

Every refusal is an HTTP error status, so the webhook's failurePolicy decides,
and is counted in ``gatewatch_webhook_requests_refused_total{reason}``.

kopf stays the framework: the server is a ``kopf.WebhookServer`` (TLS options,
the client config it reports, its place in the operator's lifecycle), and kopf
runs startup, cleanup and signals. Reviews do not go through kopf's handler
registry (docs/architecture.md says why).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import aiohttp.web
import kopf
import orjson

from gatewatch import bounded_json
from gatewatch.admission import (
    ROUTES_BY_PATH,
    WEBHOOK_ROUTES,
    AdmissionReviewer,
    RejectedReview,
    UnknownWebhookPath,
    WebhookRoute,
    check_review,
    resolve_route,
    review_response,
)
from gatewatch.config import ServerLimits, review_body_limit
from gatewatch.deadlines import CallDeadlines
from gatewatch.errors import InputError
from gatewatch.logs import printable, reason_phrase
from gatewatch.metrics import Metrics
from gatewatch.review_gate import GateFull, WeightedGate
from gatewatch.webhook_listener import Connection, WebhookListener

logger = logging.getLogger(__name__)

# How long closing the listener waits for reviews still being answered.
LISTENER_SHUTDOWN_SECONDS = 5.0
# Bodies up to this size are read without the bodies gate: maxConnections of them is little
# memory, and real reviews are this small, so they never wait behind large ones.
SMALL_BODY_BYTES = 64 * 1024
# aiohttp's read buffer, and the TLS layer's: what a connection holds of a body not read yet.
READ_BUFFER_BYTES = 16 * 1024
# The longest error message sent back or logged, and how often one kind of refusal is logged.
MESSAGE_LIMIT = 1000
REFUSAL_LOG_INTERVAL_SECONDS = 10.0
# How many distinct addresses answered reviews came from are logged (the API server's, normally).
CALLERS_LOGGED = 16

ClientConfigCallback = Callable[[kopf.WebhookClientConfig], Awaitable[None]]


class Refused(Exception):
    """A call answered with an HTTP error status; ``reason`` is the metric's label."""

    def __init__(self, status: int, reason: str, message: str, *, retry_after: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class GuardedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server, answering gatewatch's reviews itself, within ``limits``.

    ``on_serving`` is awaited once the server listens, with kopf's client config
    (gatewatch then registers its ValidatingWebhookConfiguration). On stop,
    ``on_draining`` is called and the server keeps answering for
    ``drain_seconds`` before the listener closes.
    """

    def __init__(
        self,
        *,
        reviewer: AdmissionReviewer,
        metrics: Metrics,
        on_serving: ClientConfigCallback | None = None,
        on_draining: Callable[[], None] | None = None,
        drain_seconds: float = 0.0,  # the operator passes ``server.drainSeconds``
        limits: ServerLimits | None = None,
        deadline_seconds: float = 4.0,  # the operator passes Settings.review_deadline_seconds
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._reviewer = reviewer
        self._metrics = metrics
        self._on_serving = on_serving
        self._on_draining = on_draining
        self._drain_seconds = drain_seconds
        self.limits = limits or ServerLimits()
        self.deadline_seconds = deadline_seconds
        self._json_limits = bounded_json.JsonLimits(
            max_depth=self.limits.max_json_depth, max_values=self.limits.max_json_values)
        self._listener: WebhookListener | None = None
        # What is in memory at once: bodies over SMALL_BODY_BYTES, and the reviews being evaluated.
        self.body_gate = WeightedGate(capacity=self.limits.buffered_body_bytes,
                                      max_waiters=self.limits.max_connections)
        self.review_gate = WeightedGate(capacity=self.limits.json_values_in_flight,
                                        max_holders=self.limits.concurrent_reviews,
                                        max_waiters=self.limits.queued_reviews)
        self._deadlines = CallDeadlines()  # one timer for every call's deadline, not one per call
        # Every path served ({webhook.path}/{handler}[/{mode}]) -> its route and body limit, worked out once.
        prefix = self.path.rstrip("/") if self.path else ""
        self._routes = {f"{prefix}/{path}": (route, review_body_limit(objects=route.body_objects, limits=self.limits))
                        for path, route in ROUTES_BY_PATH.items()}
        self._refusals_logged: dict[str, tuple[float, int]] = {}
        self._callers: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        # ``fn`` is kopf's handler machinery: never called, gatewatch answers itself.
        cadata, context = self._build_ssl()
        app = aiohttp.web.Application(client_max_size=self._largest_body())
        # Every method and path comes here: the route is chosen before the body is read.
        app.router.add_route("*", "/{tail:.*}", self._serve)
        runner = aiohttp.web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=LISTENER_SHUTDOWN_SECONDS,
            keepalive_timeout=self.limits.idle_timeout_seconds,
            # A body not read (a refused call) is not drained: the connection is closed instead.
            lingering_time=0,
            # A connection that goes (evicted, or the caller gave up) takes its call with it, and
            # with it the room the call held.
            handler_cancellation=True,
            # What aiohttp buffers of a body nobody reads yet (twice this, then it stops reading).
            read_bufsize=READ_BUFFER_BYTES,
        )
        await runner.setup()
        listener = WebhookListener(
            runner.server, ssl_context=context, read_buffer_bytes=4 * READ_BUFFER_BYTES,
            max_connections=self.limits.max_connections, header_timeout=self.limits.header_timeout_seconds,
            on_closed=lambda reason: self._metrics.webhook_connections_closed.labels(reason=reason).inc(),
            on_count=self._metrics.webhook_connections.set,
        )
        self._listener = listener
        try:
            port = await listener.start(self.addr or None, self.port or 0)  # None: any interface
            schema = "http" if context is None else "https"
            host = self.host or self.DEFAULT_HOST or self._get_accessible_addr(self.addr)
            client_config = kopf.WebhookClientConfig(url=self._build_url(schema, host, port, self.path or ""))
            if cadata is not None:
                client_config["caBundle"] = base64.b64encode(cadata).decode("ascii")
            if self._on_serving is not None:
                await self._on_serving(client_config)
            yield client_config
            try:
                # Certificate renewals reload the SSLContext in place: the listener never restarts.
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await self._drain()
                raise
        finally:
            await listener.close()
            await runner.cleanup()
            self._listener = None

    def _largest_body(self) -> int:
        return max(review_body_limit(objects=route.body_objects, limits=self.limits) for route in WEBHOOK_ROUTES)

    async def _drain(self) -> None:
        """Stopping: report not-ready, keep answering while the Service stops routing here."""
        if self._on_draining is not None:
            self._on_draining()
        if self._drain_seconds > 0:
            logger.info("stopping: not ready; answering reviews for %gs more before closing the listener",
                        self._drain_seconds)
            await asyncio.sleep(self._drain_seconds)

    # --- one call --------------------------------------------------------------------------

    async def _serve(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        connection = self._listener.connection_of(request.protocol) if self._listener is not None else None
        if connection is not None:
            connection.request_started()
        try:
            return await self._serve_call(request, connection)
        except Refused as refused:
            return self._refusal_response(refused)
        finally:
            if connection is not None:
                connection.request_finished()

    async def _serve_call(self, request: aiohttp.web.Request, connection: Connection | None) -> aiohttp.web.Response:
        deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        found = self._routes.get(request.path)
        if found is None:
            raise Refused(404, "unknown_path", f"gatewatch serves no webhook at {request.path!r}")
        route, limit = found
        if request.method != "POST":
            raise Refused(405, "method", f"webhook {route.handler_id!r} takes POST, not {request.method}")
        declared = request.content_length
        if declared is not None and declared > limit:
            raise self._too_large(route, limit, f"{declared:,} bytes")
        bodies = self.body_gate
        weight = bodies.clamp(declared if declared is not None else limit)
        held = False  # the body's room, until the answer is sent
        progress = _Progress("room")
        try:
            with self._deadlines.watch(deadline):
                if weight > SMALL_BODY_BYTES:
                    if not bodies.try_take(weight):
                        await bodies.take(weight)
                    held = True
                progress.stage = "body"
                body = await self._read_body(request, route=route, limit=limit)
                if connection is not None:
                    connection.body_received()
                answer = await self._answer(body, route=route, progress=progress)
        except GateFull as full:
            raise Refused(429, "overloaded", f"gatewatch is busy ({full} for room for large review "
                          "bodies); not evaluated", retry_after=True) from None
        except TimeoutError:
            raise self._timed_out(progress) from None
        finally:
            if held:
                bodies.give_back(weight)
        if connection is None or connection.requests == 1:  # once per connection is enough
            self._note_caller(request.remote)
        return aiohttp.web.Response(body=answer, content_type="application/json")

    def _timed_out(self, progress: "_Progress") -> Refused:
        """The refusal for a call whose deadline passed, by where it was."""
        within = f"within {self.deadline_seconds:g}s"
        if progress.stage == "body":
            return Refused(408, "body_timeout", f"the request body did not arrive {within}; not evaluated")
        if progress.stage == "evaluating":
            return Refused(503, "deadline", f"gatewatch could not evaluate {within} (server.limits.deadlineSeconds)")
        what = "a large review body" if progress.stage == "room" else "the review"
        return Refused(429, "overloaded", f"gatewatch is busy: no room for {what} {within}; not evaluated",
                       retry_after=True)

    def _note_caller(self, address: str | None) -> None:
        """Log each new address reviews come from (the first CALLERS_LOGGED): where the API server
        calls from, for networkPolicy.apiServerCIDRs (docs/install.md)."""
        if address is None or address in self._callers or len(self._callers) >= CALLERS_LOGGED:
            return
        self._callers.add(address)
        logger.info("answered a review from %s (a new caller address; the first %d are logged)",
                    address, CALLERS_LOGGED)

    def _too_large(self, route: WebhookRoute, limit: int, size: str) -> Refused:
        self._metrics.oversized_reviews.inc()
        return Refused(413, "too_large", f"review body of {size} is over {limit:,} bytes, the most webhook "
                       f"{route.handler_id!r} reads (server.limits); not evaluated")

    async def _read_body(self, request: aiohttp.web.Request, *, route: WebhookRoute, limit: int) -> bytearray:
        body = bytearray()
        try:
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise self._too_large(route, limit, f"more than {len(body):,} bytes")
        except (ConnectionError, aiohttp.ClientPayloadError) as error:  # the peer went, or was closed
            raise Refused(400, "body_incomplete", f"the request body ended early: {error}") from None
        return body

    # --- the review --------------------------------------------------------------------

    async def answer(
        self, body: bytes | bytearray, *, webhook: str | WebhookRoute | None, deadline: float | None = None,
    ) -> bytes:
        """The encoded AdmissionReview response to one webhook call's body; ``Refused`` (an HTTP
        error status) for anything not evaluated. ``deadline``: loop time by which to answer."""
        route = webhook if isinstance(webhook, WebhookRoute) else resolve_route(webhook or "")
        if route is None:
            raise Refused(404, "unknown_path", f"gatewatch serves no webhook at {webhook!r}")
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        progress = _Progress("line")
        try:
            with self._deadlines.watch(deadline):
                return await self._answer(body, route=route, progress=progress)
        except TimeoutError:
            raise self._timed_out(progress) from None

    async def _answer(self, body: bytes | bytearray, *, route: WebhookRoute, progress: "_Progress") -> bytes:
        """answer(), within the caller's deadline; ``progress`` says where a timeout found it."""
        started = time.perf_counter()
        request: Mapping[str, Any] = {}
        outcome = "error"
        try:
            if not body or body.isspace():
                raise Refused(400, "malformed", "not a readable AdmissionReview: body is empty")
            try:
                shape = bounded_json.measure(body, limits=self._json_limits)
            except bounded_json.UnreadableJson as error:
                raise Refused(400, "malformed", f"not a readable AdmissionReview: {error.reason}") from None
            gate = self.review_gate
            weight = gate.clamp(shape.values)
            progress.stage = "line"
            if not gate.try_take(weight):
                try:
                    await gate.take(weight)
                except GateFull as full:
                    raise Refused(429, "overloaded", f"gatewatch is busy ({gate.holders} reviews under way, "
                                  f"{full}); not evaluated", retry_after=True) from None
            try:
                progress.stage = "evaluating"
                review = self._parse(body)
                request = _request_of(review)
                decision = await self._evaluate(review, route)
            finally:
                gate.give_back(weight)
            outcome = "denied" if not decision.allowed else "warned" if decision.warnings else "allowed"
            return orjson.dumps(review_response(review, decision))
        finally:
            self._metrics.count_review(resource=_resource_label(request), operation=_operation_label(request),
                                       decision=outcome, seconds=time.perf_counter() - started)

    @staticmethod
    def _parse(body: bytes | bytearray) -> Any:
        try:
            return bounded_json.parse(body)
        except bounded_json.UnreadableJson as error:
            raise Refused(400, "malformed", f"not a readable AdmissionReview: {error.reason}") from None

    async def _evaluate(self, review: Any, route: WebhookRoute) -> Any:
        try:
            checked = check_review(review, route=route)
        except RejectedReview as error:
            reason = "unknown_path" if isinstance(error, UnknownWebhookPath) else "malformed"
            raise Refused(error.status, reason, str(error)) from None
        try:
            return await self._reviewer.review(checked)
        except InputError as error:  # a field the document needs, of the wrong type
            raise Refused(400, "malformed", f"not a readable AdmissionReview: {error.reason}") from None
        except (asyncio.CancelledError, TimeoutError):
            raise
        except Exception as error:
            logger.exception("evaluation failed for %s review %s", route.resource_path,
                             printable(str(checked.request.get("uid")), 100))
            raise Refused(500, "evaluation_failed", f"gatewatch could not evaluate: {type(error).__name__}: "
                          f"{error}") from None

    # --- refusals ----------------------------------------------------------------------

    def _refusal_response(self, refused: Refused) -> aiohttp.web.Response:
        self._metrics.webhook_refused.labels(reason=refused.reason).inc()
        message = printable(refused.message, MESSAGE_LIMIT)
        self._log_refusal(refused.reason, refused.status, message)
        headers = {"Retry-After": "1"} if refused.retry_after else None
        return aiohttp.web.Response(status=refused.status, reason=reason_phrase(message), text=message + "\n",
                                    headers=headers)

    def _log_refusal(self, reason: str, status: int, message: str) -> None:
        """One WARNING per kind of refusal per REFUSAL_LOG_INTERVAL_SECONDS, with how many were not logged:
        a flood of bad calls does not flood the log (the metric counts every one)."""
        now = time.monotonic()
        last, suppressed = self._refusals_logged.get(reason, (float("-inf"), 0))
        if now - last < REFUSAL_LOG_INTERVAL_SECONDS:
            self._refusals_logged[reason] = (last, suppressed + 1)
            return
        self._refusals_logged[reason] = (now, 0)
        more = f" ({suppressed} more like it not logged)" if suppressed else ""
        logger.warning("refused a webhook call (%d %s): %s%s", status, reason, message, more)


class _Progress:
    """Where a call is: ``room`` (for a large body), ``body`` (reading it), ``line`` (for a review
    slot), ``evaluating``; what its deadline passing means depends on it."""

    __slots__ = ("stage",)

    def __init__(self, stage: str) -> None:
        self.stage = stage


def _request_of(review: Any) -> Mapping[str, Any]:
    # dict first: typing's Mapping check costs more than the rest of this.
    request = review.get("request") if type(review) is dict or isinstance(review, Mapping) else None
    return request if type(request) is dict or isinstance(request, Mapping) else {}


# Metric labels come from the request body: anything but what gatewatch serves is "other",
# so a caller cannot grow the label sets (and the cached children) without bound.
_RESOURCE_LABELS = frozenset(route.resource_path for route in WEBHOOK_ROUTES)
_OPERATION_LABELS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def _resource_label(request: Mapping[str, Any]) -> str:
    resource = request.get("resource")
    name = resource.get("resource") if type(resource) is dict or isinstance(resource, Mapping) else None  # dict first
    if not name:
        return "unknown"
    sub = request.get("subResource")
    label = f"{name}/{sub}" if sub else str(name)
    return label if label in _RESOURCE_LABELS else "other"


def _operation_label(request: Mapping[str, Any]) -> str:
    operation = request.get("operation")
    if not operation:
        return ""
    return operation if isinstance(operation, str) and operation in _OPERATION_LABELS else "other"


__all__ = ["GuardedWebhookServer", "LISTENER_SHUTDOWN_SECONDS", "Refused", "SMALL_BODY_BYTES"]
