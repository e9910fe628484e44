"""Alert sinks: stdout lines and the HTTP sink against a real aiohttp server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp.web
import pytest

from gatewatch.alert_sinks import AlertFanout, AlertSink, HttpAlertSink, StdoutAlertSink, redact_url
from gatewatch.errors import GatewatchError
from gatewatch.metrics import Metrics

PASSWORD = "s3cr3t-Pa55"


def alert(number: int) -> dict:
    return {"@timestamp": "2026-11-22T05:00:00Z", "rule": {"id": f"rule-{number}"}, "message": f"alert {number}"}


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait for background delivery; fails the test only if it never happens."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@dataclass
class Collector:
    """An alert endpoint that answers ``fail_with`` to the first ``failures`` requests."""

    failures: int = 0
    fail_with: int = 503
    # When set, the first request waits for it (a POST in flight at shutdown).
    hold_first: asyncio.Event | None = None
    requests: list[aiohttp.web.Request] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    accepted: list[dict] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.text()
        self.requests.append(request)
        self.headers.append(dict(request.headers))
        if self.hold_first is not None and len(self.requests) == 1:
            await self.hold_first.wait()
            return aiohttp.web.Response(status=503)
        if len(self.requests) <= self.failures:
            # A redirect points back here: followed, it would be accepted.
            headers = {"Location": str(request.url)} if 300 <= self.fail_with < 400 else None
            return aiohttp.web.Response(status=self.fail_with, text="try later", headers=headers)
        self.accepted += [json.loads(line) for line in body.splitlines()]
        return aiohttp.web.Response(status=204)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    collector = Collector()
    app = aiohttp.web.Application()
    app.router.add_post("/ingest", collector.handle)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    collector.url = f"http://gatewatch:{PASSWORD}@127.0.0.1:{port}/ingest?token=tok-{PASSWORD}"
    yield collector
    await runner.cleanup()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[AlertSink], None]]:
    tasks: list[asyncio.Task] = []

    def start(sink: AlertSink) -> None:
        tasks.append(asyncio.create_task(sink.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def dropped_metric(metrics: Metrics, queue: str) -> float:
    return metrics.registry.get_sample_value("gatewatch_queue_dropped_total", {"queue": queue}) or 0.0


async def test_http_sink_retries_failures_and_delivers_every_alert_once_in_order(
    collector: Collector, running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector.failures = 2
    url_file = tmp_path / "url"
    url_file.write_text(collector.url + "\n")
    sink = HttpAlertSink.from_url_file(url_file, batch_size=3, flush_interval=0.05, max_retries=5, backoff=0.01)
    caplog.set_level(logging.DEBUG, logger="gatewatch")

    assert all(sink.emit(alert(n)) for n in range(5))
    running(sink)
    await eventually(lambda: len(collector.accepted) == 5)

    assert collector.accepted == [alert(n) for n in range(5)]
    assert sink.dropped == 0 and sink.delivered == 5
    # Batched: 5 alerts in batches of at most 3, plus the two refused attempts.
    assert len(collector.requests) == 4
    expected_auth = "Basic " + base64.b64encode(f"gatewatch:{PASSWORD}".encode()).decode()
    assert {h["Authorization"] for h in collector.headers} == {expected_auth}
    assert {h["Content-Type"] for h in collector.headers} == {"application/x-ndjson"}
    assert "attempt 1 failed: HTTP 503" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in repr(sink)


async def test_http_sink_gives_up_after_max_retries_counts_the_drop_and_keeps_running(
    collector: Collector, running, caplog: pytest.LogCaptureFixture
) -> None:
    collector.failures, collector.fail_with = 3, 500
    metrics = Metrics()
    sink = HttpAlertSink(collector.url, batch_size=10, flush_interval=0.01, max_retries=2, backoff=0.01,
                         metrics=metrics)
    caplog.set_level(logging.DEBUG, logger="gatewatch")
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.failed_batches == 1)

    assert len(collector.requests) == 3  # the first try and two retries
    assert sink.dropped == 1 and dropped_metric(metrics, "alerts-http") == 1
    assert "dropped 1 alert(s)" in caplog.text
    assert PASSWORD not in caplog.text

    # The endpoint is back: later alerts go through.
    sink.emit(alert(2))
    await eventually(lambda: collector.accepted == [alert(2)])


async def test_http_sink_does_not_retry_a_refused_batch(collector: Collector, running) -> None:
    collector.failures, collector.fail_with = 1, 400
    sink = HttpAlertSink(collector.url, flush_interval=0.01, max_retries=5, backoff=0.01)
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.failed_batches == 1)
    assert len(collector.requests) == 1 and sink.dropped == 1


async def test_unreachable_endpoint_errors_are_logged_without_credentials(
    running, caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    sink = HttpAlertSink(f"https://user:{PASSWORD}@127.0.0.1:{unused_tcp_port}/x?key={PASSWORD}",
                         flush_interval=0.01, max_retries=1, backoff=0.01)
    caplog.set_level(logging.DEBUG, logger="gatewatch")
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.failed_batches == 1)
    assert "ClientConnectorError" in caplog.text or "ClientOSError" in caplog.text
    assert PASSWORD not in caplog.text
    assert "user:***@127.0.0.1" in caplog.text


async def test_a_full_buffer_drops_and_counts_without_blocking(collector: Collector) -> None:
    metrics = Metrics()
    sink = HttpAlertSink(collector.url, buffer_size=2, metrics=metrics)  # no worker: nothing drains
    assert [sink.emit(alert(n)) for n in range(4)] == [True, True, False, False]
    assert sink.dropped == 2 and dropped_metric(metrics, "alerts-http") == 2


async def test_drain_sends_what_is_buffered_on_shutdown(collector: Collector) -> None:
    sink = HttpAlertSink(collector.url, batch_size=2)
    for n in range(3):
        sink.emit(alert(n))
    await sink.drain(timeout=5)
    assert collector.accepted == [alert(n) for n in range(3)]


async def test_a_batch_in_flight_at_shutdown_is_sent_again_by_drain(collector: Collector) -> None:
    collector.hold_first = asyncio.Event()
    sink = HttpAlertSink(collector.url, flush_interval=0.01)
    sink.emit(alert(1))
    task = asyncio.create_task(sink.run())
    await eventually(lambda: len(collector.requests) == 1)  # the POST is in flight
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sink.emit(alert(2))
    await sink.drain(timeout=5)
    collector.hold_first.set()
    assert collector.accepted == [alert(1), alert(2)]
    assert sink.dropped == 0


async def test_redirects_are_not_followed(collector: Collector, running) -> None:
    collector.failures, collector.fail_with = 1, 307
    sink = HttpAlertSink(collector.url, flush_interval=0.01, max_retries=3, backoff=0.01)
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.failed_batches == 1)
    assert len(collector.requests) == 1 and sink.dropped == 1
    assert collector.accepted == []


def test_url_file_problems_name_the_file_and_never_echo_the_secret(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(GatewatchError, match="absent: cannot read the alert URL file"):
        HttpAlertSink.from_url_file(missing)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(GatewatchError, match="empty: the alert URL file is empty"):
        HttpAlertSink.from_url_file(empty)
    wrong = tmp_path / "wrong"
    wrong.write_text(f"ftp://user:{PASSWORD}@example.com/alerts")
    with pytest.raises(GatewatchError, match="wrong: the alert URL must be http") as raised:
        HttpAlertSink.from_url_file(wrong)
    assert PASSWORD not in str(raised.value)


def test_redact_url_hides_password_and_query_values() -> None:
    assert redact_url(f"https://me:{PASSWORD}@siem.example/in?token=abc&x=1") == (
        "https://me:***@siem.example/in?token=***&x=***"
    )
    assert redact_url("https://siem.example/in") == "https://siem.example/in"


async def test_stdout_sink_writes_one_json_line_per_alert(running) -> None:
    stream = io.StringIO()
    sink = StdoutAlertSink(stream)
    sink.emit(alert(1))
    sink.emit(alert(2))
    running(sink)
    await eventually(lambda: sink.delivered == 2)
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [alert(1), alert(2)]


async def test_fanout_gives_each_sink_every_alert(collector: Collector, running) -> None:
    stream = io.StringIO()
    stdout_sink = StdoutAlertSink(stream, buffer_size=1)
    http_sink = HttpAlertSink(collector.url, flush_interval=0.01)
    fanout = AlertFanout([stdout_sink, http_sink])
    assert isinstance(fanout, AlertSink)
    assert fanout.emit(alert(1)) is True
    assert fanout.emit(alert(2)) is True  # stdout's buffer is full; HTTP still takes it
    assert stdout_sink.dropped == 1
    running(fanout)
    await eventually(lambda: len(collector.accepted) == 2 and stdout_sink.delivered == 1)
    assert json.loads(stream.getvalue()) == alert(1)


async def test_alerts_given_as_functions_are_built_once_by_the_workers(running) -> None:
    built: list[int] = []

    def build() -> dict:
        built.append(1)
        return alert(7)

    first, second = io.StringIO(), io.StringIO()
    sinks = [StdoutAlertSink(first), StdoutAlertSink(second)]
    assert AlertFanout(sinks).emit(build)
    assert built == []  # emitting only queued it
    running(AlertFanout(sinks))
    await eventually(lambda: all(sink.delivered == 1 for sink in sinks))
    assert json.loads(first.getvalue()) == json.loads(second.getvalue()) == alert(7)
    assert built == [1]


async def test_an_alert_that_cannot_be_built_is_counted_and_the_rest_delivered(running) -> None:
    metrics = Metrics()
    stream = io.StringIO()
    sink = StdoutAlertSink(stream, metrics=metrics)

    def broken() -> dict:
        raise KeyError("a bug")

    sink.emit(broken)
    sink.emit(alert(2))
    running(sink)
    await eventually(lambda: sink.delivered == 1)
    assert json.loads(stream.getvalue()) == alert(2)
    assert sink.dropped == 1 and dropped_metric(metrics, "alerts-stdout") == 1


async def test_stdout_lines_handed_to_a_busy_thread_pool_survive_cancellation_and_drain() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    release = threading.Event()
    busy = loop.run_in_executor(None, release.wait, 10)  # the pool's only thread is taken
    stream = io.StringIO()
    sink = StdoutAlertSink(stream)
    sink.emit(alert(1))
    worker = asyncio.create_task(sink.run())
    for _ in range(10):  # let run() take the alert and hand it to the (busy) pool
        await asyncio.sleep(0)
    worker.cancel()  # shutdown before any thread started the write
    await asyncio.gather(worker, return_exceptions=True)
    sink.emit(alert(2))
    release.set()
    await busy
    await sink.drain(timeout=5)
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [alert(1), alert(2)]
    assert sink.dropped == 0


async def test_a_batch_still_filling_at_shutdown_is_sent_by_drain(collector: Collector) -> None:
    sink = HttpAlertSink(collector.url, batch_size=10, flush_interval=60)
    sink.emit(alert(1))
    worker = asyncio.create_task(sink.run())
    for _ in range(10):  # run() takes the alert and waits for the batch to fill
        await asyncio.sleep(0)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    sink.emit(alert(2))
    await sink.drain(timeout=5)
    assert collector.accepted == [alert(1), alert(2)] and sink.dropped == 0
