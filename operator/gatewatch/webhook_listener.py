"""The webhook port's listener: TLS and HTTP connections with bounded count and time.

aiohttp's own sites accept every connection and give a peer all the time it
likes to finish its TLS handshake and its request headers (an hour's
keep-alive by default), and asyncio's TLS layer allocates a 256 KiB read
buffer per connection, so 2,000 peers that connect and stall held over
500 MiB. This listener bounds that:

- at most ``max_connections`` at once; a new connection beyond it closes the
  connection idle or stalled longest (never one whose review is being
  evaluated: its body is all there and its answer is bounded by the deadline),
  or, if every one is under evaluation, is itself closed;
- TLS starts only once the connection is admitted, with a 32 KiB read buffer;
- the TLS handshake and the first request's headers must be done within
  ``header_timeout`` of the accept, a later request's headers within
  ``header_timeout`` of their first byte (one periodic sweep checks every
  connection: no timer per request); between requests a connection may stay
  idle for ``idle_timeout`` (aiohttp's keep-alive).

The request handler reports each request's progress (``request_started``,
``body_received``, ``request_finished``), which is what the eviction order
and the header deadline go by.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import enum
import logging
import socket
import ssl
from typing import Any, Callable

logger = logging.getLogger(__name__)


class Stage(enum.Enum):
    TLS = "tls"  # handshake under way
    IDLE = "idle"  # no request under way
    HEADERS = "headers"  # a request's first bytes arrived, its headers are not complete
    BODY = "body"  # the handler runs, the body is being read
    EVALUATING = "evaluating"  # the body is complete: only the deadline bounds what is left


class _CompactTlsProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS protocol, reading 32 KiB at a time instead of 256 KiB.

    asyncio allocates its read buffer (``max_size``) for every connection up
    front: at 256 KiB that is most of what a connection costs, and what a
    peer holding many connections is after. TLS records are at most 16 KiB.
    """

    max_size = 32 * 1024


async def start_tls(
    loop: asyncio.AbstractEventLoop, raw: asyncio.Transport, protocol: asyncio.Protocol,
    context: ssl.SSLContext, *, handshake_timeout: float,
) -> asyncio.BaseTransport:
    """``loop.start_tls`` (server side), with the compact TLS protocol; the same steps as
    asyncio's own (Python 3.11-3.13 base_events.start_tls)."""
    if not hasattr(asyncio.sslproto.SSLProtocol, "max_size"):  # a Python whose TLS layer differs
        return await loop.start_tls(raw, protocol, context, server_side=True,
                                    ssl_handshake_timeout=handshake_timeout)
    waiter = loop.create_future()
    tls = _CompactTlsProtocol(loop, protocol, context, waiter, server_side=True,
                              ssl_handshake_timeout=handshake_timeout, call_connection_made=False)
    raw.pause_reading()
    raw.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, raw)
    resumed = loop.call_soon(raw.resume_reading)
    try:
        await waiter
    except BaseException:
        raw.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls._app_transport


class Connection(asyncio.Protocol):
    """One accepted connection: admitted or refused, TLS, then the HTTP handler's protocol.

    It stays the protocol under the TLS transport and forwards to the handler,
    watching the stages on the way.
    """

    def __init__(self, listener: "WebhookListener") -> None:
        self._listener = listener
        self._loop = listener.loop
        self.stage = Stage.TLS
        self.since = self._loop.time()  # when the current stage began: eviction goes oldest first
        self.requests = 0
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.BaseTransport | None = None  # what the handler writes to
        self.handler: asyncio.Protocol | None = None
        self.closed = False
        self._tls_task: asyncio.Task[None] | None = None
        self._early = bytearray()

    # --- the raw TCP connection, until TLS is up ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        # Nothing is read until the connection is admitted (start_tls resumes reading).
        self.raw.pause_reading()
        if not self._listener.admit(self):
            return
        # From accept (``since``): the TLS handshake and the first request's headers, within
        # header_timeout (the listener's sweep closes those that are late).
        if self._listener.ssl_context is None:
            self._attach(self.raw)
            self.raw.resume_reading()
        else:
            self._tls_task = self._loop.create_task(self._start_tls())

    async def _start_tls(self) -> None:
        assert self.raw is not None and self._listener.ssl_context is not None
        try:
            transport = await start_tls(
                self._loop, self.raw, self, self._listener.ssl_context,
                # The header timer (the same span, from accept) fires first; this is the backstop.
                handshake_timeout=self._listener.header_timeout + 1.0,
            )
        except (OSError, asyncio.TimeoutError) as error:  # ssl.SSLError is an OSError
            # e.g. no client certificate where webhook.clientCA asks for one.
            logger.debug("webhook connection: TLS handshake failed: %s", error)
            self._closed("tls_failed")
            return
        if self.closed or transport is None:
            return
        self._attach(transport)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if transport is not self.raw and hasattr(transport, "set_read_buffer_limits"):
            # Decrypted data waiting for the handler: asyncio's default lets it grow to 256 KiB.
            transport.set_read_buffer_limits(high=self._listener.read_buffer_bytes)
        self.handler = self._listener.handler_factory()
        self._listener.by_handler[self.handler] = self
        self.stage = Stage.IDLE  # ``since`` stays the accept: the first request is still due from then
        self.handler.connection_made(transport)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    # --- asyncio.Protocol: forwarded to the HTTP handler once attached --------------------

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            # The TLS layer hands on what arrived with the end of the handshake before start_tls
            # has returned: kept for the handler (at most a read or two; the header timer runs).
            self._early += data
            return
        if self.stage is Stage.IDLE:
            if self.requests:
                self._enter(Stage.HEADERS)  # the next request's headers are due from their first byte
            else:
                self.stage = Stage.HEADERS  # a new connection's are due from its accept
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(None)
        if self.handler is not None:
            self._listener.by_handler.pop(self.handler, None)
            self.handler.connection_lost(exc)

    # --- progress reported by the request handler ------------------------------------------

    def request_started(self) -> None:
        self.requests += 1
        self._enter(Stage.BODY)

    def body_received(self) -> None:
        self._enter(Stage.EVALUATING)

    def request_finished(self) -> None:
        self._enter(Stage.IDLE)  # aiohttp's keep-alive timer (idle_timeout) takes over

    # --- closing ---------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Abort the connection now (evicted, or its time ran out)."""
        if self.closed:
            return
        transport = self.transport or self.raw
        self._closed(reason)
        if self._tls_task is not None and not self._tls_task.done():
            self._tls_task.cancel()
        if transport is not None:
            transport.abort()

    def _closed(self, reason: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            self._listener.count_closed(reason)
        self._listener.forget(self)

    def _enter(self, stage: Stage) -> None:
        self.stage = stage
        self.since = self._loop.time()

    def overdue(self, now: float, header_timeout: float) -> bool:
        """TLS or headers not done in time, or a new connection that never sent a request."""
        waiting = self.stage in (Stage.TLS, Stage.HEADERS) or (self.stage is Stage.IDLE and not self.requests)
        return waiting and now - self.since > header_timeout


class WebhookListener:
    """Accepts connections for an aiohttp server (``handler_factory``: ``AppRunner.server``), within limits."""

    def __init__(
        self,
        handler_factory: Callable[[], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        header_timeout: float,
        read_buffer_bytes: int = 64 * 1024,
        on_closed: Callable[[str], None] = lambda reason: None,
        on_count: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.handler_factory = handler_factory
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.read_buffer_bytes = read_buffer_bytes
        self._on_closed = on_closed
        self._on_count = on_count
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.by_handler: dict[Any, Connection] = {}
        self._server: asyncio.AbstractServer | None = None
        # One timer for every connection's header deadline, not one per request: closes a late
        # connection between header_timeout and 1.25 x header_timeout after its deadline started.
        self._sweep_interval = max(0.05, header_timeout / 4)
        self._sweep_handle: asyncio.TimerHandle | None = None

    async def start(self, host: str | None, port: int) -> int:
        """Listen; returns the bound port."""
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, reuse_port=True,
            backlog=min(1024, max(128, self.max_connections)),
        )
        self._sweep_handle = self.loop.call_later(self._sweep_interval, self._sweep)
        sockets = self._server.sockets or ()
        for sock in sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return port

    async def close(self) -> None:
        """Stop accepting; connections still in their TLS handshake are dropped (the HTTP
        server's own shutdown finishes the others)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for connection in list(self.connections):
            if connection.stage is Stage.TLS:
                connection.close("shutdown")

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in [c for c in self.connections if c.overdue(now, self.header_timeout)]:
            logger.debug("closing a webhook connection: %s not done within %gs", connection.stage.value,
                         self.header_timeout)
            connection.close("header_timeout")
        self._sweep_handle = self.loop.call_later(self._sweep_interval, self._sweep)

    def connection_of(self, handler: Any) -> Connection | None:
        return self.by_handler.get(handler)

    def admit(self, connection: Connection) -> bool:
        if len(self.connections) >= self.max_connections:
            victim = min(
                (c for c in self.connections if c.stage is not Stage.EVALUATING),
                key=lambda c: c.since, default=None,
            )
            if victim is None:
                self.count_closed("refused")
                connection.closed = True
                assert connection.raw is not None
                connection.raw.abort()
                return False
            logger.debug("webhook connections at the limit (%d): closing one %s since %.1fs",
                         self.max_connections, victim.stage.value, self.loop.time() - victim.since)
            victim.close("evicted")
        self.connections.add(connection)
        self._on_count(len(self.connections))
        return True

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self._on_count(len(self.connections))

    def count_closed(self, reason: str) -> None:
        self._on_closed(reason)


__all__ = ["Connection", "Stage", "WebhookListener"]
