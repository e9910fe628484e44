"""Where the operator's alerts go: stdout and an optional HTTP(S) endpoint.

Every sink has a bounded buffer: :meth:`AlertSink.emit` only queues the alert
and returns at once (False, counted as a drop, when the buffer is full), and
the sink's :meth:`run` task delivers. A stalled log pipe or a failing HTTP
endpoint therefore never delays an admission review. ``emit`` also takes a
function that builds the alert: the review path then only queues the match and
its document, and the sink's worker builds the alert and its JSON line.

The HTTP sink POSTs batches as NDJSON (one ECS alert per line, the lines of
``gatewatch.alerts.alert_line``), retries 5xx/429/connection errors with
exponential backoff and full jitter, and drops (and counts) a batch when the
retries are exhausted or the endpoint refuses it (other 4xx). Its URL may carry
credentials (``https://user:password@host/path`` becomes HTTP basic auth); it is
read from a file (a mounted Secret key) and appears only redacted in logs and
error messages.

Shutdown: cancel :meth:`run`, then await :meth:`drain`. A delivery that was
under way when ``run`` was cancelled is finished (stdout) or sent again (HTTP)
by ``drain`` before what is still buffered: nothing taken from a buffer is lost.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, TextIO, Union, runtime_checkable

import aiohttp
import yarl

from gatewatch.alerts import alert_line
from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

Alert = Mapping[str, Any]
# An alert, or a function that builds it (called once, by the sink's worker).
AlertSource = Union[Alert, Callable[[], Alert]]
NDJSON = "application/x-ndjson"
# Statuses worth another try: the endpoint is overloaded or restarting.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
STDOUT_BATCH = 1000  # lines per write to stdout
BUILD_CHUNK = 16  # alerts built between two looks at the event loop


@runtime_checkable
class AlertSink(Protocol):
    """A non-blocking alert destination with its own delivery task.

    ``emit`` is called on the review path, from the event loop's thread.
    """

    name: str

    def emit(self, alert: AlertSource) -> bool:
        """Queue ``alert``; never blocks. False when the buffer is full (the alert is dropped and counted)."""
        ...

    async def run(self) -> None:
        """Deliver queued alerts until cancelled."""
        ...

    async def drain(self, *, timeout: float) -> None:
        """On shutdown (after cancelling ``run``): deliver what is queued, within ``timeout`` seconds."""
        ...


class _BufferedSink:
    """The bounded buffer, drop counting and alert-to-line conversion shared by the sinks."""

    name = "alerts"

    def __init__(self, *, buffer_size: int, metrics: Metrics | None) -> None:
        if buffer_size < 1:
            raise GatewatchError(f"alert sink {self.name}: buffer size must be at least 1, not {buffer_size}")
        self._buffer: asyncio.Queue[AlertSource] = asyncio.Queue(maxsize=buffer_size)
        self._metrics = metrics
        self.dropped = 0  # alerts lost: buffer full, or delivery given up
        self.delivered = 0

    def emit(self, alert: AlertSource) -> bool:
        try:
            self._buffer.put_nowait(alert)
        except asyncio.QueueFull:
            self._count_dropped(1)
            return False
        return True

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        if self._metrics is not None:
            self._metrics.queue_dropped(self.name, count)

    def _take_nowait(self, limit: int) -> list[AlertSource]:
        items: list[AlertSource] = []
        while len(items) < limit and not self._buffer.empty():
            items.append(self._buffer.get_nowait())
        return items

    def _lines(self, items: Sequence[AlertSource]) -> tuple[list[str], int]:
        """The JSON lines of ``items``, and how many could not be built (a bug: logged, counted by the caller)."""
        lines: list[str] = []
        failed = 0
        for item in items:
            try:
                lines.append(alert_line(item() if callable(item) else item))
            except Exception:
                failed += 1
                logger.exception("%s: could not build an alert; dropped", self.name)
        return lines, failed


class StdoutAlertSink(_BufferedSink):
    """One JSON line per alert on stdout, flushed; built by the worker task and written by a thread,
    off the review path.

    The lines are those of ``gatewatch.alerts.StdoutAlertSink`` (the synchronous
    writer the CLI uses); this one adds the operator's bounded buffer.
    """

    name = "alerts-stdout"

    def __init__(
        self, stream: TextIO | None = None, *, buffer_size: int = 10_000, metrics: Metrics | None = None
    ) -> None:
        super().__init__(buffer_size=buffer_size, metrics=metrics)
        self._stream = stream
        # The write under way: it outlives a cancelled run(), and drain() waits for it.
        self._writing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            items = [await self._buffer.get()]
            items += self._take_nowait(STDOUT_BATCH - 1)
            self._writing = asyncio.ensure_future(self._deliver(items))
            try:
                await asyncio.shield(self._writing)
            except Exception:  # a bug must not end alert delivery for good
                logger.exception("%s: unexpected error while writing alerts; continuing", self.name)

    async def drain(self, *, timeout: float) -> None:
        async def everything() -> None:
            if self._writing is not None:
                await self._writing
            while not self._buffer.empty():
                await self._deliver(self._take_nowait(STDOUT_BATCH))

        try:
            await asyncio.wait_for(everything(), timeout=timeout)
        except asyncio.TimeoutError:
            logger.warning("shutdown: stdout did not take %d alert(s) within %gs", self._buffer.qsize(), timeout)

    async def _deliver(self, items: list[AlertSource]) -> None:
        # Built on the event loop a few at a time, so reviews run in between; only the write
        # (which may block on a full pipe) goes to a thread. A thread building JSON would hold
        # the GIL for up to a switch interval (5 ms) while a review waits: a p99 spike.
        lines: list[str] = []
        for start in range(0, len(items), BUILD_CHUNK):
            built, failed = self._lines(items[start:start + BUILD_CHUNK])
            lines += built
            self._count_dropped(failed)
            await asyncio.sleep(0)
        error = await asyncio.to_thread(self._write, lines)
        if error is not None:  # closed or broken stdout
            self._count_dropped(len(lines))
            logger.warning("dropped %d alert(s): cannot write to stdout: %s", len(lines), error)

    def _write(self, lines: Sequence[str]) -> OSError | ValueError | None:
        """In the worker thread: write the lines; the error if stdout is closed or broken."""
        # sys.stdout looked up at write time, so redirection (and pytest's capture) applies.
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(line + "\n" for line in lines))
            stream.flush()
        except (OSError, ValueError) as error:
            return error
        self.delivered += len(lines)
        return None


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
        # The batch being sent (JSON lines): if run() is cancelled mid-POST, drain() sends
        # it again (at least once: the endpoint may see it twice, never zero times).
        self._in_flight: list[str] = []
        self._filling: list[AlertSource] = []  # taken from the buffer for the next batch
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
                batch, failed = self._lines(await self._next_batch())
                self._count_dropped(failed)
                if not batch:
                    continue
                self._in_flight = batch
                try:
                    await self._deliver(session, batch)
                except Exception as error:  # a bug must not end delivery for good, nor leak the URL
                    self._count_dropped(len(batch))
                    logger.error("dropped %d alert(s): %s", len(batch), self._scrub(f"{type(error).__name__}: {error}"))
                self._in_flight = []

    async def drain(self, *, timeout: float) -> None:
        buffered, failed = self._lines(self._take_nowait(self._buffer.qsize()))
        self._count_dropped(failed)
        filling, failed = self._lines(self._filling)
        self._count_dropped(failed)
        pending = self._in_flight + filling + buffered
        self._in_flight, self._filling = [], []

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

    async def _next_batch(self) -> list[AlertSource]:
        """Wait for an alert, then up to ``flush_interval`` for the batch to fill.

        The batch being filled is ``self._filling``: if run() is cancelled meanwhile, drain() sends it.
        """
        batch = self._filling = [await self._buffer.get()]
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
        self._filling = []
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

    def emit(self, alert: AlertSource) -> bool:
        if callable(alert) and len(self.sinks) > 1:
            alert = functools.cache(alert)  # built once, whichever sink's worker gets there first
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
