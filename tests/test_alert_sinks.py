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
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp.web
import pytest

from gatewatch import background
from gatewatch.alert_sinks import (
    AlertDeliveryFailed,
    AlertFanout,
    AlertSink,
    HttpAlertSink,
    StdoutAlertSink,
    redact_url,
)
from gatewatch.errors import GatewatchError
from gatewatch.metrics import Metrics
from gatewatch.supervisor import Supervisor
from supervision import QuickSleep, closed_port, eventually, supervised

PASSWORD = "s3cr3t-Pa55"


def alert(number: int) -> dict:
    return {"@timestamp": "2026-11-22T05:00:00Z", "rule": {"id": f"rule-{number}"}, "message": f"alert {number}"}


@dataclass
class Collector:
    """An alert endpoint that answers ``fail_with`` to the first ``failures`` requests."""

    failures: int = 0
    fail_with: int = 503
    # When set, the first request waits for it (a POST in flight), then gets this status.
    hold_first: asyncio.Event | None = None
    hold_first_status: int = 503
    # When set, every request waits for it (a hanging endpoint), then gets 503.
    hang: asyncio.Event | None = None
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
            if self.hold_first_status >= 300:
                return aiohttp.web.Response(status=self.hold_first_status)
        elif self.hang is not None:
            await self.hang.wait()
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
async def running() -> AsyncIterator[Callable[[AlertSink | AlertFanout], Supervisor]]:
    """Starts sinks as the operator does: each its supervised delivery task (gatewatch.background)."""
    supervisor = Supervisor(sleep=QuickSleep(), jitter=lambda low, high: high)
    sinks: list[AlertSink] = []

    def start(sink: AlertSink | AlertFanout) -> Supervisor:
        for one in sink.sinks if isinstance(sink, AlertFanout) else [sink]:
            supervisor.start(replace(background.alert_delivery(one), name=f"{one.name}-{len(sinks)}"))
            sinks.append(one)
        return supervisor

    yield start
    await supervisor.stop()
    for sink in sinks:
        if isinstance(sink, HttpAlertSink):
            await sink.close()


def dropped_metric(metrics: Metrics, queue: str) -> float:
    return metrics.registry.get_sample_value("gatewatch_queue_dropped_total", {"queue": queue}) or 0.0


async def test_http_sink_retries_failures_and_delivers_every_alert_once_in_order(
    collector: Collector, running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector.failures = 2
    url_file = tmp_path / "url"
    url_file.write_text(collector.url + "\n")
    sink = HttpAlertSink.from_url_file(url_file, batch_size=3, flush_interval=0.05)
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
    assert "did not take 3 alert(s) (HTTP 503); kept, 5 buffered of 10000" in caplog.text
    assert "works again after 2 failed attempt(s)" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in repr(sink)


async def test_http_sink_keeps_retrying_with_backoff_for_as_long_as_the_buffer_has_room(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.failures, collector.fail_with = 12, 500  # twice what the sink used to give up after
    metrics = Metrics()
    sink = HttpAlertSink(collector.url, batch_size=10, flush_interval=0.01, metrics=metrics)
    caplog.set_level(logging.INFO, logger="gatewatch")
    sleep = QuickSleep()
    sink.emit(alert(1))
    async with supervised(background.alert_delivery(sink), metrics=metrics, sleep=sleep):
        await eventually(lambda: collector.accepted == [alert(1)])
    await sink.close()

    assert len(collector.requests) == 13 and sink.failed_attempts == 12
    assert sink.dropped == 0 and dropped_metric(metrics, "alerts-http") == 0
    # The supervisor's backoff (jitter at its maximum): doubling from 0.5 s, at most 30 s.
    assert sleep.pauses[:12] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30]
    assert metrics.registry.get_sample_value("gatewatch_task_failures_total", {"task": "alerts-http"}) == 12
    # Logged on the 1st, 2nd, 4th and 8th failure in a row, not on every one.
    assert caplog.text.count("alert delivery to") == 4 + 1  # and once more when it works again
    assert PASSWORD not in caplog.text


async def test_http_sink_does_not_retry_a_refused_batch(collector: Collector, running) -> None:
    collector.failures, collector.fail_with = 1, 400
    metrics = Metrics()
    sink = HttpAlertSink(collector.url, flush_interval=0.01, metrics=metrics)
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.dropped == 1)
    sink.emit(alert(2))
    await eventually(lambda: collector.accepted == [alert(2)])
    assert len(collector.requests) == 2 and dropped_metric(metrics, "alerts-http") == 1


async def test_unreachable_endpoint_errors_are_logged_without_credentials(
    running, caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    sink = HttpAlertSink(f"https://user:{PASSWORD}@127.0.0.1:{unused_tcp_port}/x?key={PASSWORD}",
                         flush_interval=0.01)
    caplog.set_level(logging.DEBUG, logger="gatewatch")
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.failed_attempts >= 2)
    assert "ClientConnectorError" in caplog.text or "ClientOSError" in caplog.text
    assert PASSWORD not in caplog.text
    assert "user:***@127.0.0.1" in caplog.text
    assert sink.dropped == 0 and sink.buffered == 1


async def test_a_full_buffer_drops_the_oldest_alerts_and_counts_them(collector: Collector) -> None:
    collector.failures = 1
    metrics = Metrics()
    sink = HttpAlertSink(collector.url, batch_size=5, buffer_size=10, flush_interval=0.01, metrics=metrics)
    for n in range(5):
        sink.emit(alert(n))
    with pytest.raises(AlertDeliveryFailed, match="HTTP 503"):
        await sink.cycle()  # the batch 0-4 stays for the next attempt
    assert all(sink.emit(alert(n)) for n in range(5, 15))  # room is made, oldest first
    assert sink.dropped == 5 and dropped_metric(metrics, "alerts-http") == 5
    while sink.buffered:
        await sink.cycle()
    await sink.close()
    assert collector.accepted == [alert(n) for n in range(5, 15)]


async def test_a_full_buffer_spares_the_batch_whose_post_is_on_the_wire(collector: Collector) -> None:
    collector.hold_first = asyncio.Event()
    collector.hold_first_status = 204  # the held POST is accepted once released
    sink = HttpAlertSink(collector.url, batch_size=5, buffer_size=8, flush_interval=0.01)
    for n in range(5):
        sink.emit(alert(n))
    posting = asyncio.create_task(sink.cycle())
    await eventually(lambda: len(collector.requests) == 1)
    assert [sink.emit(alert(n)) for n in range(5, 9)] == [True] * 4  # 5 is dropped to make room for 8
    collector.hold_first.set()
    await posting
    while sink.buffered:
        await sink.cycle()
    await sink.close()
    assert collector.accepted == [alert(n) for n in (0, 1, 2, 3, 4, 6, 7, 8)] and sink.dropped == 1


@pytest.mark.parametrize("outage", ["refused", "hanging", "http503"])
async def test_no_alert_is_lost_in_an_outage_the_buffer_covers(
    outage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's reproduction: 120 alerts during an outage, a buffer of 10,000: 0 lost.

    The outage is counted in failed attempts, not seconds: it lasts until the sink has
    failed 10 times (its old limit was 1 + 5 attempts), while alerts keep coming.
    """
    caplog.set_level(logging.INFO, logger="gatewatch")
    port = closed_port()
    collector = Collector()
    runner: aiohttp.web.AppRunner | None = None

    async def serve() -> aiohttp.web.AppRunner:
        app = aiohttp.web.Application()
        app.router.add_post("/ingest", collector.handle)
        started = aiohttp.web.AppRunner(app, access_log=None)
        await started.setup()
        await aiohttp.web.TCPSite(started, "127.0.0.1", port, reuse_address=True).start()
        return started

    if outage == "hanging":
        collector.hang = asyncio.Event()  # every POST waits for it (then 503): the client times out first
    elif outage == "http503":
        collector.failures = 10**6
    if outage != "refused":
        runner = await serve()
    metrics = Metrics()
    sink = HttpAlertSink(f"http://127.0.0.1:{port}/ingest", batch_size=50, buffer_size=10_000,
                         flush_interval=0.01, request_timeout=0.2, metrics=metrics)
    try:
        async with supervised(background.alert_delivery(sink), metrics=metrics) as supervisor:
            for n in range(120):
                sink.emit(alert(n))
                if n % 12 == 11:  # ten waves, each after one more failed attempt
                    await eventually(lambda n=n: sink.failed_attempts >= (n + 1) // 12, what="a failed attempt")
            assert collector.accepted == [] and sink.buffered == 120
            assert supervisor.problems() == []
            # The outage ends.
            if outage == "refused":
                runner = await serve()
            elif outage == "hanging":
                collector.hang.set()
                collector.hang = None
            else:
                collector.failures = 0
            await eventually(lambda: len(collector.accepted) >= 120, what="every alert delivered")
    finally:
        await sink.close()
        if collector.hang is not None:
            collector.hang.set()
        if runner is not None:
            await runner.cleanup()
    assert collector.accepted == [alert(n) for n in range(120)]  # all, once, in order
    assert sink.dropped == 0 and dropped_metric(metrics, "alerts-http") == 0
    assert sink.failed_attempts >= 10
    assert "works again" in caplog.text


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
    task = asyncio.create_task(sink.cycle())
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
    sink = HttpAlertSink(collector.url, flush_interval=0.01)
    sink.emit(alert(1))
    running(sink)
    await eventually(lambda: sink.dropped == 1)
    assert len(collector.requests) == 1
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


class CountingStream(io.StringIO):
    """stdout that counts the writes it is given."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_stdout_sink_writes_alerts_arriving_one_by_one_in_one_write() -> None:
    # Reviews queue alerts one at a time; a write (a thread hand-off and a flush) per alert would cost
    # the worker about as much as the reviews themselves.
    stream = CountingStream()
    sink = StdoutAlertSink(stream)
    sink.emit(alert(0))
    cycle = asyncio.create_task(sink.cycle())
    for _ in range(5):  # the worker takes the first alert
        await asyncio.sleep(0)
    assert sink.buffered == 0
    for number in range(1, 50):  # the next reviews' alerts, before the worker writes
        sink.emit(alert(number))
    await cycle
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [alert(n) for n in range(50)]
    assert stream.writes == 1


async def test_fanout_gives_each_sink_every_alert(collector: Collector, running) -> None:
    stream = io.StringIO()
    stdout_sink = StdoutAlertSink(stream, buffer_size=1)
    http_sink = HttpAlertSink(collector.url, flush_interval=0.01)
    fanout = AlertFanout([stdout_sink, http_sink])
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
    worker = asyncio.create_task(sink.cycle())
    for _ in range(10):  # let the cycle take the alert and hand it to the (busy) pool
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
    worker = asyncio.create_task(sink.cycle())
    for _ in range(10):  # the cycle takes the alert and waits for the batch to fill
        await asyncio.sleep(0)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    sink.emit(alert(2))
    await sink.drain(timeout=5)
    assert collector.accepted == [alert(1), alert(2)] and sink.dropped == 0
