"""Malformed reviews get one answer: 400 with a message saying what is wrong, never an allow (issue 8 item 4).

Each case is sent over TLS straight to /validate/pods, as anything that reaches
the port could; gatewatch's real reviewer with the default rules stands behind it.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from webhook_serving import Served, encode, exec_review, pod_review, serving
from gatewatch.webhook_server import Refused


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    async with serving(tmp_path / "tls") as running:
        yield running


async def post(served: Served, body: bytes, path: str = "/validate/pods") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(served.url(path), data=body, ssl=served.client_context,
                                headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.text()


def without(review: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(review)
    target = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


def replaced(review: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    changed = copy.deepcopy(review)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


CASES = [
    ("no request.namespace", encode(without(pod_review(), "request", "namespace")),
     "request.namespace missing for a namespaced resource"),
    ("spec: null", encode(replaced(pod_review(), None, "request", "object", "spec")),
     "request.object.spec: expected an object, got null"),
    ("containers as a string", encode(replaced(pod_review(), "busybox", "request", "object", "spec", "containers")),
     "request.object.spec.containers: expected a list, got str"),
    ("image as a number", encode(replaced(pod_review(), 5, "request", "object", "spec", "containers", 0, "image")),
     "request.object.spec.containers[0].image: expected a string, got int"),
    ("invalid JSON", b'{"apiVersion": "admission.k8s.io/v1", "request": {', "body is not JSON"),
    ("empty body", b"", "body is empty"),
    ("non-UTF-8 bytes", b'{"apiVersion": "admission.k8s.io/v1", "kind": "\xff\xfe"}', "body is not UTF-8"),
    ("JSON nested 200,000 deep", b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
]


@pytest.mark.parametrize(("case", "body", "message"), CASES, ids=[case for case, _, _ in CASES])
async def test_each_malformed_review_is_a_400_saying_what_is_wrong(served: Served, case, body, message):
    status, text = await post(served, body)
    assert status == 400, text
    assert message in text
    assert "allowed" not in text
    assert served.sample("gatewatch_webhook_requests_refused_total", reason="malformed") == 1
    # The same review, well formed, is evaluated: the 400 is the malformation's.
    status, text = await post(served, encode(pod_review()))
    assert status == 200 and json.loads(text)["response"]["allowed"] is True


async def test_a_busybox_pod_in_enforce_is_still_denied(served: Served):
    # The control: what the default rules deny stays denied through the same path.
    status, text = await post(served, encode(pod_review(image="busybox:1.36")))
    assert status == 200
    assert json.loads(text)["response"]["allowed"] is False


async def test_a_nul_in_a_subresource_never_reaches_the_reason_phrase(served: Served):
    review = pod_review()
    review["request"]["subResource"] = "ex\x00ec\r\nX-Injected: 1"
    body = encode(review)
    reader, writer = await served.open()
    writer.write(b"POST /validate/pods HTTP/1.1\r\nHost: gatewatch\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    status_line, *headers = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 400 ")
    assert re.fullmatch(r"HTTP/1\.1 400 [\x20-\x7e]+", status_line), status_line
    assert not any(header.lower().startswith("x-injected") for header in headers)


def wrong_types() -> list[Any]:
    return [None, 7, -1.5, True, "text", [], ["x"], {}, {"k": "v"}, [[[]]]]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path in a review, objects and lists included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from paths(item, (*prefix, index))


@pytest.mark.parametrize("webhook", ["pods", "pods-exec"])
async def test_wrongly_typed_fields_get_400_or_an_answer_never_500_and_no_traceback(
    served: Served, webhook: str, caplog: pytest.LogCaptureFixture,
):
    """Every field of a review, replaced by values of every JSON type: issue 9 found 500s with
    tracebacks (19,000 fuzz requests wrote 35 MB of stderr)."""
    valid = pod_review() if webhook == "pods" else exec_review(command=["sh", "-c", "id"])
    statuses: dict[int, int] = {}
    caplog.set_level(logging.INFO)
    sent = 0
    for path in paths(valid):
        for value in wrong_types():
            try:
                answer = json.loads(await served.server.answer(encode(replaced(valid, value, *path)), webhook=webhook))
                status = 200
                assert answer["response"]["uid"] == valid["request"]["uid"] or path[-1] == "uid"
            except Refused as refused:
                status = refused.status
            statuses[status] = statuses.get(status, 0) + 1
            sent += 1
    assert set(statuses) <= {200, 400}, statuses
    assert statuses[400] > sent / 2  # most replacements make a review no API server sends
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
