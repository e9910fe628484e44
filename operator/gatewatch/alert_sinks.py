"""Where the operator's alerts go: stdout and an optional HTTP(S) endpoint.

Every sink has a bounded buffer: :meth:`AlertSink.emit` only queues the alert
and returns at once, and the sink's :meth:`cycle` delivers, run again and
again by the operator's supervisor (``gatewatch.supervisor``, wired in
``gatewatch.background``): an exception never ends delivery, a failed cycle is
retried after a backoff. A stalled log pipe or a failing HTTP endpoint
therefore never delays an admission review. ``emit`` also takes a function
that builds the alert, or its JSON line: the review path then only queues the
match and its document, and the sink's worker builds the alert and its line.

The HTTP sink POSTs batches as NDJSON (one ECS alert per line, the lines of
``gatewatch.alerts.alert_line``) and retries a batch for as long as its buffer
has room: connection errors, timeouts, 408, 429 and 5xx never lose an alert;
only a full buffer does, oldest first and counted. A batch the endpoint
refuses (another 4xx) is dropped and counted. Optionally the buffer is also
kept in a bounded file (``gatewatch.alert_spill``), so a restart keeps it. The
URL may carry credentials (``https://user:password@host/path`` becomes HTTP
basic auth); it is read from a file (a mounted Secret key) and appears only
redacted in logs and error messages.

Shutdown: cancel the cycle, then await :meth:`drain`. A delivery that was
under way when the cycle was cancelled is finished (stdout) or sent again
(HTTP) by ``drain`` before what is still buffered: nothing taken from a
buffer is lost.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, TextIO, Union, runtime_checkable

import aiohttp
import yarl

from gatewatch.alert_spill import AlertSpill
from gatewatch.alerts import alert_line
from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

Alert = Mapping[str, Any]
# An alert, or a function that builds it or its JSON line (alerts.alert_line; called once, by the sink's worker).
AlertSource = Union[Alert, Callable[[], Union[Alert, str]]]
NDJSON = "application/x-ndjson"
# Statuses worth another try: the endpoint is overloaded or restarting.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
STDOUT_BATCH = 1000  # lines per write to stdout
# After the first alert of a batch, how long the stdout worker lets more arrive before it writes: handing
# a write to a thread costs about as much as a review, so at thousands of alerts a second a write per
# alert or two would be the worker's main cost. An alert line appears at most this much later.
STDOUT_LINGER_SECONDS = 0.05
BUILD_CHUNK = 16  # alerts built between two looks at the event loop
# A worker finishes a cycle at least this often, even with nothing to do (the supervisor's liveness).
IDLE_CYCLE_SECONDS = 5.0
DRAIN_RETRY_SECONDS = 0.5  # at shutdown, between two attempts to an endpoint that failed


@runtime_checkable
class AlertSink(Protocol):
    """A non-blocking alert destination; its ``cycle`` is run again and again by a supervised task.

    ``emit`` is called on the review path, from the event loop's thread.
    """

    name: str

    def emit(self, alert: AlertSource) -> bool:
        """Queue ``alert``; never blocks. False when this alert could not be kept (dropped and counted)."""
        ...

    async def cycle(self) -> None:
        """One round of delivery; raises when it failed (the supervisor retries after a backoff)."""
        ...

    async def drain(self, *, timeout: float) -> None:
        """On shutdown (after cancelling the cycle): deliver what is queued, within ``timeout`` seconds."""
        ...


def _lines(items: Sequence[AlertSource], *, sink: str) -> tuple[list[str], int]:
    """The JSON lines of ``items``, and how many could not be built (a bug: logged, counted by the caller)."""
    lines: list[str] = []
    failed = 0
    for item in items:
        try:
            built = item() if callable(item) else item
            lines.append(built if type(built) is str else alert_line(built))
        except Exception:
            failed += 1
            logger.exception("%s: could not build an alert; dropped", sink)
    return lines, failed


class StdoutAlertSink:
    """One JSON line per alert on stdout, flushed; built by the worker and written by a thread,
    off the review path.

    The lines are those of ``gatewatch.alerts.StdoutAlertSink`` (the synchronous
    writer the CLI uses); this one adds the operator's bounded buffer. A full
    buffer refuses new alerts (counted): stdout that does not keep up is a
    stalled pipe, whose oldest lines are as good as the newest.
    """

    name = "alerts-stdout"

    def __init__(
        self, stream: TextIO | None = None, *, buffer_size: int = 10_000, metrics: Metrics | None = None
    ) -> None:
        if buffer_size < 1:
            raise GatewatchError(f"alert sink {self.name}: buffer size must be at least 1, not {buffer_size}")
        self._buffer: asyncio.Queue[AlertSource] = asyncio.Queue(maxsize=buffer_size)
        self._metrics = metrics
        self._stream = stream
        # The write under way: it outlives a cancelled cycle, and drain() and the next cycle wait for it.
        self._writing: asyncio.Task[None] | None = None
        self.dropped = 0  # alerts lost: buffer full, not built, stdout closed
        self.delivered = 0

    @property
    def buffered(self) -> int:
        return self._buffer.qsize()

    def emit(self, alert: AlertSource) -> bool:
        try:
            self._buffer.put_nowait(alert)
        except asyncio.QueueFull:
            self._count_dropped(1)
            return False
        return True

    async def cycle(self, *, idle: float = IDLE_CYCLE_SECONDS) -> None:
        """Wait for alerts (at most ``idle`` seconds) and write what is queued, up to ``STDOUT_BATCH`` lines.

        Raises ``AlertDeliveryFailed`` when stdout is closed or broken (those lines are counted as dropped).
        """
        if self._writing is not None and not self._writing.done():
            await asyncio.wait({self._writing})  # a write a cancelled cycle left (a stalled pipe): never two at once
        try:
            first = await asyncio.wait_for(self._buffer.get(), timeout=idle)
        except asyncio.TimeoutError:
            return
        # Shielded from here on: the alert taken is written even if this cycle is cancelled while it lingers.
        self._writing = asyncio.ensure_future(self._gather_and_deliver(first))
        await asyncio.shield(self._writing)

    async def _gather_and_deliver(self, first: AlertSource) -> None:
        await asyncio.sleep(STDOUT_LINGER_SECONDS)  # let a burst's other alerts join this write
        await self._deliver([first, *self._take_nowait(STDOUT_BATCH - 1)])

    async def drain(self, *, timeout: float) -> None:
        async def everything() -> None:
            if self._writing is not None:
                await asyncio.gather(self._writing, return_exceptions=True)
            while not self._buffer.empty():
                try:
                    await self._deliver(self._take_nowait(STDOUT_BATCH))
                except AlertDeliveryFailed as error:
                    logger.warning("shutdown: %s", error)

        try:
            await asyncio.wait_for(everything(), timeout=timeout)
        except asyncio.TimeoutError:
            logger.warning("shutdown: stdout did not take %d alert(s) within %gs", self._buffer.qsize(), timeout)

    def _take_nowait(self, limit: int) -> list[AlertSource]:
        items: list[AlertSource] = []
        while len(items) < limit and not self._buffer.empty():
            items.append(self._buffer.get_nowait())
        return items

    async def _deliver(self, items: list[AlertSource]) -> None:
        # Built on the event loop a few at a time, so reviews run in between; only the write
        # (which may block on a full pipe) goes to a thread. A thread building JSON would hold
        # the GIL for up to a switch interval (5 ms) while a review waits: a p99 spike.
        lines: list[str] = []
        for start in range(0, len(items), BUILD_CHUNK):
            built, failed = _lines(items[start:start + BUILD_CHUNK], sink=self.name)
            lines += built
            self._count_dropped(failed)
            await asyncio.sleep(0)
        error = await asyncio.to_thread(self._write, lines)
        if error is not None:  # closed or broken stdout
            self._count_dropped(len(lines))
            raise AlertDeliveryFailed(f"cannot write to stdout: {error}; {len(lines)} alert(s) dropped")

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

    def _count_dropped(self, count: int) -> None:
        if count:
            self.dropped += count
            if self._metrics is not None:
                self._metrics.queue_dropped(self.name, count)


class AlertDeliveryFailed(GatewatchError):
    """A delivery attempt failed; the supervisor logs it and runs the next cycle after a backoff."""


class HttpAlertSink:
    """Batched NDJSON POSTs of alerts to ``url``, retried for as long as the buffer has room.

    The buffer holds up to ``buffer_size`` alerts: the batch being delivered
    (oldest), then the alerts waiting. A batch stays until the endpoint accepts
    it (2xx): connection errors, timeouts and 408/429/5xx are retried, one
    attempt per ``cycle``, the supervisor backing off in between. Only a full
    buffer loses alerts: ``emit`` then drops the oldest (counted in ``dropped``
    and ``gatewatch_queue_dropped_total{queue="alerts-http"}``), sparing the
    batch while a POST of it is on the wire (that POST decides its fate). A
    batch the endpoint refuses (another 4xx) is dropped and counted: sending
    it again would not help.

    With ``spill`` (an ``AlertSpill``), built alert lines also go to a bounded
    file, and the alerts a previous process left there are sent first.
    """

    name = "alerts-http"

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 2.0,
        buffer_size: int = 10_000,
        request_timeout: float = 10.0,
        metrics: Metrics | None = None,
        source: str | None = None,
        spill: AlertSpill | None = None,
    ) -> None:
        if buffer_size < 1:
            raise GatewatchError(f"alert sink {self.name}: buffer size must be at least 1, not {buffer_size}")
        self._url = _parse_url(url, source=source)
        self.redacted_url = redact_url(self._url)
        self._secrets = _secrets_of(url, self._url)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.buffer_size = buffer_size
        self.request_timeout = request_timeout
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._metrics = metrics
        self._spill = spill
        self._session: aiohttp.ClientSession | None = None
        # Oldest first: the batch being delivered, the built lines waiting, the alerts not built yet.
        self._batch: list[str] = []
        self._waiting: deque[str] = deque()
        self._incoming: deque[AlertSource] = deque()
        self._posting = False  # a POST of the batch is on the wire
        self._arrived = asyncio.Event()
        self._spill_dead = 0  # lines in the spill file that are no longer buffered
        self._spill_short = False  # the spill file could not hold every buffered line
        self._spill_failing = False  # the last spill write failed (logged once)
        self.dropped = 0  # alerts lost: buffer full, refused by the endpoint, not built, not sent at shutdown
        self.delivered = 0
        self.failed_attempts = 0
        if spill is not None:
            self._restore(spill)

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

    @property
    def buffered(self) -> int:
        """Alerts held: being delivered, waiting, not built yet."""
        return len(self._batch) + len(self._waiting) + len(self._incoming)

    # -- the review path ----------------------------------------------------

    def emit(self, alert: AlertSource) -> bool:
        """Queue ``alert``; never blocks. A full buffer drops its oldest alert (counted) to make room."""
        if self.buffered >= self.buffer_size and not self._drop_oldest():
            self._count_dropped(1)  # everything held is on the wire: this one cannot be kept
            return False
        self._incoming.append(alert)
        self._arrived.set()
        return True

    def _drop_oldest(self) -> bool:
        if self._batch and not self._posting:
            del self._batch[0]
            self._spill_dead += 1
        elif self._waiting:
            self._waiting.popleft()
            self._spill_dead += 1
        elif self._incoming:
            self._incoming.popleft()
        else:
            return False
        self._count_dropped(1)
        return True

    # -- the worker -----------------------------------------------------------

    async def cycle(self, *, idle: float = IDLE_CYCLE_SECONDS) -> None:
        """One delivery attempt; run again and again by the operator's supervisor (gatewatch.background).

        Without a batch under way: wait for alerts (at most ``idle`` seconds, then return:
        nothing to do is a success), up to ``flush_interval`` more for a full batch, and take
        it. Then POST it once. Raises ``AlertDeliveryFailed`` when the endpoint did not take
        it; the batch stays for the next cycle (unless the endpoint refused it: dropped).
        """
        if not self._batch:
            if not await self._wait_for_alerts(idle):
                return
            await self._wait_for_batch()
        await self._build()
        if not self._batch:
            self._batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
        if self._batch:
            await self._post(self._batch)

    async def _wait_for_alerts(self, idle: float) -> bool:
        if self._incoming or self._waiting:
            return True
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout=idle)
        except asyncio.TimeoutError:
            return False
        return True

    async def _wait_for_batch(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_interval
        while len(self._waiting) + len(self._incoming) < self.batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return

    async def _build(self) -> None:
        """Incoming alerts -> JSON lines waiting (and in the spill file), a few at a time between reviews."""
        built: list[str] = []
        while self._incoming:
            chunk = [self._incoming.popleft() for _ in range(min(BUILD_CHUNK, len(self._incoming)))]
            lines, failed = _lines(chunk, sink=self.name)
            self._count_dropped(failed)
            self._waiting.extend(lines)
            built += lines
            await asyncio.sleep(0)
        if self._spill is not None and built:
            await self._spill_lines(built)

    async def _post(self, batch: list[str]) -> None:
        body = "".join(line + "\n" for line in batch).encode()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._posting = True
        try:
            # No redirects: following one could hand the credentials to another host.
            async with self._session.post(
                self._url, data=body, headers={"Content-Type": NDJSON}, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.failed_attempts += 1
            problem = self._scrub(f"{type(error).__name__}: {error}") if str(error) else type(error).__name__
            raise AlertDeliveryFailed(self._kept(problem)) from None
        finally:
            self._posting = False
        if status < 300:
            self.delivered += len(batch)
            self._batch = []
            await self._gone(len(batch))
            return
        self.failed_attempts += 1
        if status in RETRYABLE_STATUSES:
            raise AlertDeliveryFailed(self._kept(f"HTTP {status}"))
        # Refused: sending this batch again will not help.
        self._count_dropped(len(batch))
        self._batch = []
        await self._gone(len(batch))
        raise AlertDeliveryFailed(f"the endpoint refused {len(batch)} alert(s) with HTTP {status}; dropped")

    def _kept(self, problem: str) -> str:
        # The supervisor's log line names the URL (redacted) already.
        return (f"did not take {len(self._batch)} alert(s) ({problem}); "
                f"kept, {self.buffered} buffered of {self.buffer_size}")

    # -- the spill file -------------------------------------------------------

    # The spill file is a copy for restarts: a file that cannot be written is logged, never a
    # reason to stop delivering (``_spill_failing`` keeps it to one line per streak).

    def _restore(self, spill: AlertSpill) -> None:
        try:
            lines = spill.load()
            if len(lines) > self.buffer_size:
                self._count_dropped(len(lines) - self.buffer_size)
                lines = lines[-self.buffer_size:]
                spill.rewrite(lines)
        except GatewatchError as error:
            logger.error("%s: starting without the alerts of the spill file: %s", self.name, error)
            return
        self._waiting.extend(lines)
        if lines:
            logger.info("%s: %d undelivered alert(s) from %s are sent first", self.name, len(lines), spill.path)

    async def _spill_call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            result = await asyncio.to_thread(method, *args)
        except GatewatchError as error:
            if not self._spill_failing:
                logger.error("%s: %s; delivery goes on, a restart would lose what is buffered", self.name, error)
            self._spill_failing = True
            return None
        if self._spill_failing:
            logger.info("%s: the spill file works again", self.name)
            self._spill_failing = False
        return result

    async def _spill_lines(self, lines: list[str]) -> None:
        assert self._spill is not None
        if await self._spill_call(self._spill.append, lines) is False:
            # Full: rewrite with what is still buffered (the newest that fit).
            await self._rewrite_spill()

    async def _gone(self, count: int) -> None:
        """``count`` spilled lines left the buffer (delivered or dropped): empty or compact the file."""
        if self._spill is None:
            return
        self._spill_dead += count
        if not self.buffered:
            await self._spill_call(self._spill.clear)
            self._spill_dead = 0
        elif self._spill_dead > self._spill.lines - self._spill_dead:
            await self._rewrite_spill()

    async def _rewrite_spill(self) -> None:
        assert self._spill is not None
        lines = [*self._batch, *self._waiting]
        kept = await self._spill_call(self._spill.rewrite, lines)
        if kept is None:
            return
        self._spill_dead = 0
        short = kept < len(lines)
        if short and not self._spill_short:
            logger.warning("%s: the spill file %s holds %d of %d buffered alert(s) (%d bytes at most); "
                           "a restart now would lose the oldest %d", self.name, self._spill.path, kept, len(lines),
                           self._spill.max_bytes, len(lines) - kept)
        self._spill_short = short

    # -- shutdown ---------------------------------------------------------------

    async def drain(self, *, timeout: float) -> None:
        """On shutdown (after the worker was cancelled): send what is buffered within ``timeout``.

        A batch whose POST the cancellation cut is sent again (at least once, never zero
        times). What is left goes to the spill file for the next start, or is dropped and counted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        problem = ""

        async def everything() -> None:
            nonlocal problem
            await self._build()
            while self._batch or self._waiting:
                if not self._batch:
                    self._batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
                try:
                    await self._post(self._batch)
                except AlertDeliveryFailed as error:
                    problem = str(error)
                    # Outages are often short: try again until the time is up.
                    await asyncio.sleep(min(DRAIN_RETRY_SECONDS, max(0.0, deadline - loop.time())))

        try:
            await asyncio.wait_for(everything(), timeout=timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            await self.close()
        if self._incoming:  # not even built in time
            self._count_dropped(len(self._incoming))
            logger.warning("shutdown: %d alert(s) not built within %gs", len(self._incoming), timeout)
            self._incoming.clear()
        left = [*self._batch, *self._waiting]
        if not left:
            return
        kept = await self._spill_call(self._spill.rewrite, left) if self._spill is not None else None
        if self._spill is not None and kept is not None:
            self._count_dropped(len(left) - kept)
            logger.warning("shutdown: %d alert(s) not sent to %s within %gs kept in %s for the next start%s",
                           kept, self.redacted_url, timeout, self._spill.path,
                           f" ({len(left) - kept} did not fit and are lost)" if kept < len(left) else "")
        else:
            self._count_dropped(len(left))
            logger.warning("shutdown: %d alert(s) not sent to %s within %gs: %s", len(left), self.redacted_url,
                           timeout, problem or "no time left")
        self._batch, self._waiting = [], deque()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- helpers ----------------------------------------------------------------

    def _count_dropped(self, count: int) -> None:
        if count:
            self.dropped += count
            if self._metrics is not None:
                self._metrics.queue_dropped(self.name, count)

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
