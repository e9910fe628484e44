"""gatewatch's background tasks in tests: the real Supervisor, quick and deterministic, and the
outages of a Kubernetes API server, on loopback.

``QuickSleep`` replaces the supervisor's sleep: it records every pause asked for
(tests assert on those, never on elapsed time) and yields for at most ``cap``
seconds, so a loop turns quickly without spinning hot.

``ApiOutages`` points a ``kubernetes`` ApiClient (which reads its configuration's
host on every call) at one of:

- ``refuse()``: a loopback port nothing listens on (connection refused);
- ``blackhole()``: a listener that accepts and never answers (only a request
  timeout ends a call);
- ``fail(status)``: a server that answers every request with ``status`` and a
  Kubernetes Status body;
- ``restore()``: the API double again.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, AsyncIterator

import aiohttp.web
import kubernetes.client

from gatewatch.metrics import Metrics
from gatewatch.supervisor import SupervisedTask, Supervisor


class QuickSleep:
    """The supervisor's sleep: records the pauses, waits at most ``cap`` seconds."""

    def __init__(self, cap: float = 0.01) -> None:
        self.cap = cap
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(min(seconds, self.cap))


@contextlib.asynccontextmanager
async def supervised(*tasks: SupervisedTask, metrics: Metrics | None = None,
                     sleep: QuickSleep | None = None) -> AsyncIterator[Supervisor]:
    """A supervisor running ``tasks`` (jitter fixed at its maximum: pauses are exact), stopped on exit."""
    supervisor = Supervisor(metrics=metrics, sleep=sleep or QuickSleep(), jitter=lambda low, high: high)
    for task in tasks:
        supervisor.start(task)
    try:
        yield supervisor
    finally:
        await supervisor.stop()


async def eventually(condition: Any, *, timeout: float = 60.0, what: str = "condition") -> None:
    """Wait for background work; the deadline only bounds a failing test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def closed_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ApiOutages:
    """Switches ``api_client`` between the API double and the outages (see the module docstring)."""

    OUTAGES = ("refused", "blackholed", "http500")

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        self.healthy_host = api_client.configuration.host
        self._refused = f"http://127.0.0.1:{closed_port()}"
        self._blackhole: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []
        self._failing: aiohttp.web.AppRunner | None = None
        self._status = 500
        self.calls_while_failing = 0

    async def start(self, kind: str) -> None:
        """Begin the outage named ``kind`` (one of ``OUTAGES``)."""
        if kind == "refused":
            self.refuse()
        elif kind == "blackholed":
            await self.blackhole()
        elif kind == "http500":
            await self.fail(500)
        else:
            raise ValueError(kind)

    def refuse(self) -> None:
        self._point_at(self._refused)

    async def blackhole(self) -> None:
        if self._blackhole is None:
            async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self._held.append(writer)
                await reader.read()  # until the client gives up and closes

            self._blackhole = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._blackhole.sockets[0].getsockname()[1]
        self._point_at(f"http://127.0.0.1:{port}")

    async def fail(self, status: int) -> None:
        self._status = status
        if self._failing is None:
            async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
                self.calls_while_failing += 1
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self._status,
                     "reason": "InternalError", "message": "the API server is having a bad day"},
                    status=self._status)

            app = aiohttp.web.Application()
            app.router.add_route("*", "/{path:.*}", answer)
            self._failing = aiohttp.web.AppRunner(app, access_log=None)
            await self._failing.setup()
            await aiohttp.web.TCPSite(self._failing, "127.0.0.1", 0).start()
        port = self._failing.addresses[0][1]
        self._point_at(f"http://127.0.0.1:{port}")

    def restore(self) -> None:
        self._point_at(self.healthy_host)

    async def close(self) -> None:
        self.restore()
        for writer in self._held:
            writer.close()
        if self._blackhole is not None:
            self._blackhole.close()
        if self._failing is not None:
            await self._failing.cleanup()

    def _point_at(self, host: str) -> None:
        self.api_client.configuration.host = host


@contextlib.asynccontextmanager
async def api_outages(api_client: kubernetes.client.ApiClient) -> AsyncIterator[ApiOutages]:
    outages = ApiOutages(api_client)
    try:
        yield outages
    finally:
        await outages.close()
