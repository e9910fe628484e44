"""Where the operator's alerts go: stdout and an optional HTTP(S) endpoint.

Every sink has a bounded buffer: :meth:`AlertSink.emit` only queues the alert
and returns at once (False, counted as a drop, when the buffer is full), and
the sink's :meth:`run` task delivers. A stalled log pipe or a failing HTTP
endpoint therefore never delays an admission review.

The HTTP sink POSTs batches as NDJSON (one ECS alert per line, the lines of
``gatewatch.alerts.alert_line``), retries 5xx/429/connection errors with
exponential backoff and full jitter, and drops (and counts) a batch when the
retries are exhausted or the endpoint refuses it (other 4xx). Its URL may carry
credentials (``https://user:password@host/path`` becomes HTTP basic auth); it is
read from a file (a mounted Secret key) and appears only redacted in logs and
error messages.
"""
from __future__ import annotations

import asyncio
import logging
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, TextIO, runtime_checkable

import aiohttp
import yarl

from gatewatch.alerts import alert_line
from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

Alert = Mapping[str, Any]
NDJSON = "application/x-ndjson"
# Statuses worth another try: the endpoint is overloaded or restarting.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@runtime_checkable
class AlertSink(Protocol):
    """A non-blocking alert destination with its own delivery task.

    ``emit`` is called on the review path, from the event loop's thread.
    """

    name: str

    def emit(self, alert: Alert) -> bool:
        """Queue ``alert``; never blocks. False when the buffer is full (the alert is dropped and counted)."""
        ...

    async def run(self) -> None:
        """Deliver queued alerts until cancelled."""
        ...

    async def drain(self, *, timeout: float) -> None:
        """On shutdown (after cancelling ``run``): deliver what is queued, within ``timeout`` seconds."""
        ...


class _BufferedSink:
    """The bounded buffer and drop counting shared by the sinks."""

    name = "alerts"

    def __init__(self, *, buffer_size: int, metrics: Metrics | None) -> None:
        if buffer_size < 1:
            raise GatewatchError(f"alert sink {self.name}: buffer size must be at least 1, not {buffer_size}")
        self._buffer: asyncio.Queue[str] = asyncio.Queue(maxsize=buffer_size)
        self._metrics = metrics
        self.dropped = 0  # alerts lost: buffer full, or delivery given up
        self.delivered = 0

    def emit(self, alert: Alert) -> bool:
        try:
            self._buffer.put_nowait(alert_line(alert))
        except asyncio.QueueFull:
            self._count_dropped(1)
            return False
        return True

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        if self._metrics is not None:
            self._metrics.queue_dropped(self.name, count)

    def _take_nowait(self, limit: int) -> list[str]:
        lines: list[str] = []
        while len(lines) < limit and not self._buffer.empty():
            lines.append(self._buffer.get_nowait())
        return lines


class StdoutAlertSink(_BufferedSink):
    """One JSON line per alert on stdout, flushed; written by a worker thread, off the review path.

    The lines are those of ``gatewatch.alerts.StdoutAlertSink`` (the synchronous
    writer the CLI uses); this one adds the operator's bounded buffer.
    """

    name = "alerts-stdout"

    def __init__(
        self, stream: TextIO | None = None, *, buffer_size: int = 10_000, metrics: Metrics | None = None
    ) -> None:
        super().__init__(buffer_size=buffer_size, metrics=metrics)
        self._stream = stream

    async def run(self) -> None:
        while True:
            lines = [await self._buffer.get()]
            lines += self._take_nowait(1000)
            try:
                # A blocked pipe blocks this thread, not the event loop.
                await asyncio.to_thread(self._write, lines)
            except (OSError, ValueError) as error:  # closed or broken stdout
                self._count_dropped(len(lines))
                logger.warning("dropped %d alert(s): cannot write to stdout: %s", len(lines), error)

    async def drain(self, *, timeout: float) -> None:
        lines = self._take_nowait(self._buffer.qsize())
        if not lines:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(self._write, lines), timeout=timeout)
        except asyncio.TimeoutError:
            logger.warning("shutdown: stdout did not take %d alert(s) within %gs", len(lines), timeout)

    def _write(self, lines: Sequence[str]) -> None:
        # sys.stdout looked up at write time, so redirection (and pytest's capture) applies.
        stream = self._stream or sys.stdout
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()
        self.delivered += len(lines)


class HttpAlertSink(_BufferedSink):
    """Batched NDJSON POSTs of alerts to ``url``, with retries and a bounded buffer."""

    name = "alerts-http"

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 2.0,
        buffer_size: int = 10_000,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        request_timeout: float = 10.0,
        metrics: Metrics | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(buffer_size=buffer_size, metrics=metrics)
        self._url = _parse_url(url, source=source)
        self.redacted_url = redact_url(self._url)
        self._secrets = _secrets_of(url, self._url)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        # The batch being sent: if run() is cancelled mid-POST, drain() sends it again
        # (at least once: the endpoint may see it twice, never zero times).
        self._in_flight: list[str] = []
        self.failed_batches = 0

    @classmethod
    def from_url_file(cls, path: str | Path, **options: Any) -> HttpAlertSink:
        """Read the URL from a file (e.g. a mounted Secret key); surrounding whitespace is ignored."""
        path = Path(path)
        try:
            url = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise GatewatchError(f"{path}: cannot read the alert URL file: {error.strerror}") from None
        if not url:
            raise GatewatchError(f"{path}: the alert URL file is empty")
        return cls(url, source=str(path), **options)

    def __repr__(self) -> str:
        return f"HttpAlertSink({self.redacted_url!r})"

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while True:
                batch = self._in_flight = await self._next_batch()
                try:
                    await self._deliver(session, batch)
                except Exception as error:  # a bug must not end delivery for good, nor leak the URL
                    self._count_dropped(len(batch))
                    logger.error("dropped %d alert(s): %s", len(batch), self._scrub(f"{type(error).__name__}: {error}"))
                self._in_flight = []

    async def drain(self, *, timeout: float) -> None:
        pending = self._in_flight + self._take_nowait(self._buffer.qsize())
        self._in_flight = []

        async def everything() -> None:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                while pending:
                    batch = pending[: self.batch_size]
                    await self._deliver(session, batch, retry=False)
                    del pending[: len(batch)]

        try:
            await asyncio.wait_for(everything(), timeout=timeout)
        except asyncio.TimeoutError:
            self._count_dropped(len(pending))
            logger.warning("shutdown: %d alert(s) not sent to %s within %gs", len(pending), self.redacted_url, timeout)

    async def _next_batch(self) -> list[str]:
        """Wait for an alert, then up to ``flush_interval`` for the batch to fill."""
        batch = [await self._buffer.get()]
        deadline = asyncio.get_running_loop().time() + self.flush_interval
        while len(batch) < self.batch_size:
            batch += self._take_nowait(self.batch_size - len(batch))
            remaining = deadline - asyncio.get_running_loop().time()
            if len(batch) >= self.batch_size or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._buffer.get(), timeout=remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _deliver(self, session: aiohttp.ClientSession, batch: list[str], *, retry: bool = True) -> bool:
        body = "".join(line + "\n" for line in batch).encode()
        attempts = 1 + (self.max_retries if retry else 0)
        problem = ""
        for attempt in range(attempts):
            if attempt:
                # Full jitter: replicas that failed together do not retry together.
                delay = random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
                await asyncio.sleep(delay)
            try:
                # No redirects: following one could hand the credentials to another host.
                async with session.post(
                    self._url, data=body, headers={"Content-Type": NDJSON}, allow_redirects=False
                ) as response:
                    if response.status < 300:
                        self.delivered += len(batch)
                        return True
                    problem = f"HTTP {response.status}"
                    if response.status not in RETRYABLE_STATUSES:
                        break  # the endpoint refuses this batch; sending it again will not help
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                problem = self._scrub(f"{type(error).__name__}: {error}")
            logger.debug("alert batch to %s: attempt %d failed: %s", self.redacted_url, attempt + 1, problem)
        self.failed_batches += 1
        self._count_dropped(len(batch))
        logger.warning(
            "dropped %d alert(s): %s did not accept them (%s)", len(batch), self.redacted_url, problem
        )
        return False

    def _scrub(self, text: str) -> str:
        """Error texts may quote the URL; never let the credentials through."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class AlertFanout:
    """Several sinks as one: ``emit`` goes to each; True if any took the alert."""

    name = "alerts"

    def __init__(self, sinks: Sequence[AlertSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> bool:
        accepted = [sink.emit(alert) for sink in self.sinks]
        return any(accepted)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for sink in self.sinks:
                group.create_task(sink.run(), name=f"gatewatch {sink.name}")

    async def drain(self, *, timeout: float) -> None:
        await asyncio.gather(*(sink.drain(timeout=timeout) for sink in self.sinks))


def redact_url(url: str | yarl.URL) -> str:
    """The URL without its password and query values: ``https://user:***@host/path?token=***``."""
    parsed = yarl.URL(str(url)) if not isinstance(url, yarl.URL) else url
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    if parsed.query:
        parsed = parsed.with_query({key: "***" for key in parsed.query})
    return str(parsed)


def _parse_url(url: str, *, source: str | None) -> yarl.URL:
    where = f"{source}: " if source else ""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        raise GatewatchError(f"{where}the alert URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise GatewatchError(
            f"{where}the alert URL must be http(s)://host/...; got {redact_url(parsed)!r}"
        )
    return parsed


def _secrets_of(raw: str, parsed: yarl.URL) -> list[str]:
    """Substrings that must never reach a log: the raw URL, its password, its query values."""
    secrets = [raw, str(parsed)]
    if parsed.password:
        secrets += [parsed.password, parsed.raw_password or ""]
    secrets += [value for value in parsed.query.values() if value]
    # Longest first, so a URL is replaced whole before its parts.
    return sorted({s for s in secrets if s}, key=len, reverse=True)
