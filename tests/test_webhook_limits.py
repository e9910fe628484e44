"""Each limit of the webhook server, shown through the real TLS server on loopback (issue 9 item 1).

The limits are set small here so each test is quick; their defaults and the
figures under attack are in docs/operations.md and benchmarks/webhook_attacks.py.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from webhook_serving import Served, encode, exec_review, pod_review, reviewer_for, serving
from gatewatch.config import ServerLimits, review_body_limit
from gatewatch.decision import Mode
from gatewatch.metrics import Metrics

KiB = 1024
LIMITS = ServerLimits(
    max_connections=6, header_timeout_seconds=0.5, idle_timeout_seconds=5,
    object_bytes=64 * KiB, connect_bytes=16 * KiB, buffered_body_bytes=1024 * KiB,
    concurrent_reviews=4, json_values_in_flight=100_000, queued_reviews=4,
)
POD_LIMIT = review_body_limit(objects=1, limits=LIMITS)  # 320 KiB
EXEC_LIMIT = review_body_limit(objects=0, limits=LIMITS)  # 272 KiB
# Generous: how long a test waits for something that the limits make happen within a second.
PATIENCE = 10.0


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serving(tmp_path / "tls", limits=LIMITS, deadline_seconds=1.0) as running:
        yield running


def head(path: str, *, length: int | None, method: str = "POST", extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gatewatch", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    status_line, *lines = raw.decode("latin-1").strip().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split(" ")[1]), {key.lower(): value for key, value in headers.items()}


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (whatever it still sent is read and dropped)."""
    try:
        while await asyncio.wait_for(reader.read(65536), PATIENCE):
            pass
    except (ConnectionError, OSError):
        pass
    return True


async def post(served: Served, body: bytes, path: str = "/validate/pods") -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session:
        async with session.post(served.url(path), data=body, ssl=served.client_context) as response:
            return response.status, await response.text()


def padded_pod(size: int) -> bytes:
    """A valid Pod review of about ``size`` bytes (a large annotation)."""
    review = pod_review()
    review["request"]["object"]["metadata"]["annotations"] = {"example.com/config": ""}
    padding = size - len(encode(review))
    review["request"]["object"]["metadata"]["annotations"]["example.com/config"] = "x" * max(0, padding)
    return encode(review)


# --- route and size, before the body -----------------------------------------------------------


async def test_an_unserved_path_is_refused_without_reading_the_body(served: Served):
    reader, writer = await served.open()
    writer.write(head("/validate/nothing", length=8 * 1024 * KiB))  # announces 8 MiB, sends none of it
    status, _ = await response_head(reader)
    assert status == 404
    assert await closed_by_server(reader)
    reader, writer = await served.open()
    writer.write(head("/validate/pods", length=0, method="GET"))
    assert (await response_head(reader))[0] == 405
    assert served.sample("gatewatch_webhook_requests_refused_total", reason="unknown_path") == 1
    assert served.sample("gatewatch_webhook_requests_refused_total", reason="method") == 1
    assert served.sample("gatewatch_admission_reviews_total", resource="unknown", operation="", decision="error") == 0


async def test_each_route_reads_at_most_what_the_api_server_can_send_for_it(served: Served):
    # A Pod CREATE of 300 KiB is within the Pod limit (one object + 256 KiB) and is evaluated...
    status, text = await post(served, padded_pod(300 * KiB))
    assert status == 200 and json.loads(text)["response"]["allowed"] is True
    # ...an exec review of that size is not: exec carries options only.
    command = ["sh", "-c", "x" * (300 * KiB)]
    status, text = await post(served, encode(exec_review(command=command)), "/validate/pods-exec")
    assert status == 413 and f"over {EXEC_LIMIT:,} bytes" in text
    # Announced too large: refused before a byte of the body is sent.
    reader, writer = await served.open()
    writer.write(head("/validate/pods", length=POD_LIMIT + 1))
    assert (await response_head(reader))[0] == 413
    assert await closed_by_server(reader)
    # Sent without a length (chunked): refused once the limit is passed.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(POD_LIMIT // (16 * KiB) + 2):
            yield b" " * (16 * KiB)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE)) as session:
        try:
            async with session.post(served.url(), data=chunks(), ssl=served.client_context) as response:
                assert response.status == 413
        except aiohttp.ClientError:
            pass  # the server may close while the client is still sending: refused all the same
    assert served.sample("gatewatch_admission_reviews_oversized_total") == 3
    assert served.sample("gatewatch_webhook_requests_refused_total", reason="too_large") == 3


# --- slow peers ----------------------------------------------------------------------------------


async def test_a_peer_that_never_starts_tls_or_never_finishes_its_headers_is_closed(served: Served):
    plain_reader, _ = await asyncio.open_connection("127.0.0.1", served.port)  # no TLS hello, ever
    reader, writer = await served.open()
    writer.write(b"POST /validate/pods HTTP/1.1\r\nHost: gatewatch\r\nContent-Le")  # and stalls
    assert await closed_by_server(plain_reader)
    assert await closed_by_server(reader)
    assert served.sample("gatewatch_webhook_connections_closed_total", reason="header_timeout") == 2
    assert served.sample("gatewatch_webhook_connections") == 0


async def test_a_body_that_stops_halfway_gets_408_at_the_deadline(served: Served):
    body = padded_pod(100 * KiB)
    reader, writer = await served.open()
    writer.write(head("/validate/pods", length=len(body)) + body[: len(body) // 2])
    status, _ = await response_head(reader)
    assert status == 408
    assert await closed_by_server(reader)
    assert served.sample("gatewatch_webhook_requests_refused_total", reason="body_timeout") == 1
    # The room it held for its body is free again: a review as large goes through.
    status, _ = await post(served, body)
    assert status == 200


async def test_at_the_connection_limit_the_longest_stalled_connection_makes_room(served: Served):
    stalled = []
    for _ in range(LIMITS.max_connections):
        reader, writer = await served.open()
        stalled.append((reader, writer))
        await asyncio.sleep(0.01)  # in order: the first is the oldest
    status, text = await post(served, encode(pod_review()))  # a new connection: one more than the limit
    assert status == 200
    assert await closed_by_server(stalled[0][0])
    assert served.sample("gatewatch_webhook_connections_closed_total", reason="evicted") >= 1
    assert served.sample("gatewatch_webhook_connections") <= LIMITS.max_connections


# --- reviews in flight ----------------------------------------------------------------------------


class Hold:
    """Namespace-label lookups that wait until released (for namespaces named slow-*)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def labels(self, namespace: str) -> dict[str, str]:
        if namespace.startswith("slow"):
            self.waiting += 1
            await self.release.wait()
        return {}


async def until(condition: Any) -> None:
    async with asyncio.timeout(PATIENCE):
        while not condition():
            await asyncio.sleep(0.01)


async def test_beyond_the_reviews_in_flight_and_the_line_a_review_gets_429(tmp_path: Path):
    hold = Hold()
    metrics = Metrics()
    limits = LIMITS.model_copy(update={"concurrent_reviews": 2, "queued_reviews": 1})
    async with serving(tmp_path / "tls", limits=limits, deadline_seconds=3.0, metrics=metrics,
                       reviewer=reviewer_for(metrics, labels=hold.labels)) as served:
        held = [asyncio.create_task(post(served, encode(pod_review(namespace=f"slow-{n}", uid=f"u{n}"))))
                for n in range(2)]
        await until(lambda: hold.waiting == 2)
        in_line = asyncio.create_task(post(served, encode(pod_review(uid="u-line"))))
        await until(lambda: served.server.review_gate.waiting == 1)
        status, text = await post(served, encode(pod_review(uid="u-shed")))
        assert status == 429 and "gatewatch is busy" in text
        hold.release.set()
        answers = await asyncio.gather(*held, in_line)
        assert [status for status, _ in answers] == [200, 200, 200]
        assert served.sample("gatewatch_webhook_requests_refused_total", reason="overloaded") == 1


async def test_a_review_that_cannot_finish_is_answered_with_an_error_before_the_api_server_gives_up(tmp_path: Path):
    hold = Hold()  # never released: the namespace lookup hangs
    metrics = Metrics()
    async with serving(tmp_path / "tls", limits=LIMITS, deadline_seconds=1.0, metrics=metrics,
                       reviewer=reviewer_for(metrics, labels=hold.labels, mode=Mode.ENFORCE)) as served:
        status, text = await post(served, encode(pod_review(namespace="slow-ns", image="busybox")))
        assert status == 503 and "could not evaluate within 1s" in text
        assert served.sample("gatewatch_webhook_requests_refused_total", reason="deadline") == 1
        assert served.sample("gatewatch_admission_reviews_total", resource="pods", operation="CREATE",
                             decision="error") == 1
        hold.release.set()


async def test_a_large_review_within_the_limits_is_evaluated(served: Served):
    # Over 64 KiB: it goes through the bodies gate, and is answered like any other.
    status, text = await post(served, padded_pod(POD_LIMIT - 1024))
    assert status == 200 and json.loads(text)["response"]["allowed"] is True
    assert served.server.body_gate.used == 0


async def test_the_addresses_reviews_come_from_are_logged_once_each(served: Served, caplog: pytest.LogCaptureFixture):
    # How an operator finds the API server's source address for networkPolicy.apiServerCIDRs.
    caplog.set_level("INFO", logger="gatewatch.webhook_server")
    for _ in range(3):
        assert (await post(served, encode(pod_review())))[0] == 200
    assert [record.getMessage() for record in caplog.records if "new caller address" in record.getMessage()] == [
        "answered a review from 127.0.0.1 (a new caller address; the first 16 are logged)"]
