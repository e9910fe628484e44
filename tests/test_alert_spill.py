"""The HTTP sink's spill file: a restart keeps what was buffered, within a bound.

A "restart" here is a new ``HttpAlertSink`` on the same file, the old one
abandoned as a crashed process leaves it (no drain), or drained on shutdown.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import AsyncIterator

import pytest

from gatewatch.alert_sinks import AlertDeliveryFailed, HttpAlertSink
from gatewatch.alert_spill import AlertSpill
from gatewatch.metrics import Metrics
from test_alert_sinks import Collector, alert, collector  # noqa: F401  (fixture)


async def deliver_everything(sink: HttpAlertSink) -> None:
    while sink.buffered:
        await sink.cycle()
    await sink.close()


async def fail_once(sink: HttpAlertSink) -> None:
    with pytest.raises(AlertDeliveryFailed):
        await sink.cycle()


@pytest.fixture
def spill_path(tmp_path: Path) -> Path:
    return tmp_path / "spill" / "alerts.ndjson"


@pytest.fixture
async def down(collector: Collector) -> AsyncIterator[Collector]:
    collector.failures = 10**6  # 503 until the test says otherwise
    yield collector


async def test_a_crash_during_an_outage_loses_nothing_the_next_start_sends_it_all(
    down: Collector, spill_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewatch")
    before = HttpAlertSink(down.url, batch_size=10, flush_interval=0.01,
                           spill=AlertSpill(spill_path, max_bytes=1 << 20))
    for n in range(25):
        before.emit(alert(n))
        if n % 10 == 9:
            await fail_once(before)
    await fail_once(before)
    await before.close()  # and then the process dies: no drain

    down.failures = 0
    after = HttpAlertSink(down.url, batch_size=10, flush_interval=0.01,
                          spill=AlertSpill(spill_path, max_bytes=1 << 20))
    assert after.buffered == 25
    await deliver_everything(after)
    assert down.accepted == [alert(n) for n in range(25)]
    assert spill_path.read_bytes() == b""  # all delivered: nothing to send again
    assert "25 undelivered alert(s) from" in caplog.text


async def test_shutdown_during_an_outage_keeps_what_is_left_for_the_next_start(
    down: Collector, spill_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    before = HttpAlertSink(down.url, flush_interval=0.01, metrics=metrics,
                           spill=AlertSpill(spill_path, max_bytes=1 << 20))
    for n in range(5):
        before.emit(alert(n))
    await before.drain(timeout=0.2)
    assert before.dropped == 0 and "kept in" in caplog.text

    down.failures = 0
    after = HttpAlertSink(down.url, flush_interval=0.01, spill=AlertSpill(spill_path, max_bytes=1 << 20))
    after.emit(alert(5))
    await deliver_everything(after)
    assert down.accepted == [alert(n) for n in range(6)]


async def test_without_a_spill_file_shutdown_in_an_outage_counts_what_is_lost(down: Collector) -> None:
    metrics = Metrics()
    sink = HttpAlertSink(down.url, flush_interval=0.01, metrics=metrics)
    for n in range(5):
        sink.emit(alert(n))
    await sink.drain(timeout=0.2)
    assert sink.dropped == 5
    assert metrics.registry.get_sample_value("gatewatch_queue_dropped_total", {"queue": "alerts-http"}) == 5


async def test_the_file_is_bounded_and_keeps_the_newest_alerts(
    down: Collector, spill_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(json.dumps(alert(10), separators=(",", ":"))) + 1
    before = HttpAlertSink(down.url, batch_size=5, flush_interval=0.01,
                           spill=AlertSpill(spill_path, max_bytes=8 * line + line // 2))
    for n in range(10, 20):
        before.emit(alert(n))
    await fail_once(before)
    await before.close()
    assert spill_path.stat().st_size <= 8 * line + line // 2
    assert "holds 8 of 10 buffered alert(s)" in caplog.text

    down.failures = 0
    after = HttpAlertSink(down.url, batch_size=5, flush_interval=0.01,
                          spill=AlertSpill(spill_path, max_bytes=8 * line + line // 2))
    await deliver_everything(after)
    assert down.accepted == [alert(n) for n in range(12, 20)]  # the newest that fit


async def test_delivered_lines_are_compacted_away_so_a_restart_resends_little(
    down: Collector, spill_path: Path
) -> None:
    down.failures = 0
    spill = AlertSpill(spill_path, max_bytes=1 << 20)
    sink = HttpAlertSink(down.url, batch_size=10, flush_interval=0.01, spill=spill)
    for n in range(100):
        sink.emit(alert(n))
    await sink.cycle()  # builds all 100 (in the file), delivers 10
    assert spill.lines == 100
    for _ in range(5):
        await sink.cycle()
    # 60 delivered, 40 buffered: the file was rewritten once delivered lines outnumbered the rest.
    assert spill.lines <= 2 * sink.buffered
    await deliver_everything(sink)
    assert spill.lines == 0 and down.accepted == [alert(n) for n in range(100)]


async def test_a_torn_last_line_and_garbage_are_skipped_the_rest_is_sent(
    collector: Collector, spill_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill_path.parent.mkdir(parents=True)
    whole = [json.dumps(alert(n)) for n in range(3)]
    spill_path.write_text("\n".join(whole) + "\nnot json\n" + json.dumps(alert(3))[:20])
    sink = HttpAlertSink(collector.url, flush_interval=0.01, spill=AlertSpill(spill_path, max_bytes=1 << 20))
    await deliver_everything(sink)
    assert collector.accepted == [alert(n) for n in range(3)]
    assert "skipped 2 line(s) that are not whole alerts" in caplog.text


async def test_a_spill_file_that_cannot_be_written_never_stops_delivery(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sink = HttpAlertSink(collector.url, flush_interval=0.01,
                         spill=AlertSpill(blocker / "alerts.ndjson", max_bytes=1 << 20))
    for n in range(3):
        sink.emit(alert(n))
    await deliver_everything(sink)
    assert collector.accepted == [alert(n) for n in range(3)]
    assert "cannot write the alert spill file" in caplog.text
