"""Log lines and reason phrases that input cannot stretch or forge (issue 9 item 9)."""
from __future__ import annotations

import io
import logging

from gatewatch.logs import LOG_MESSAGE_LIMIT, LOG_TRACEBACK_LIMIT, BoundedFormatter, printable, reason_phrase


def logger_writing_to(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(BoundedFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"test-bounded-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger


def test_a_huge_message_is_one_bounded_line_saying_how_much_was_cut():
    stream = io.StringIO()
    logger_writing_to(stream).warning("rejected: %r", "x" * 10_000_000)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert len(line) < LOG_MESSAGE_LIMIT + 100
    assert "more characters]" in line


def test_control_characters_cannot_forge_a_log_line():
    stream = io.StringIO()
    logger_writing_to(stream).warning("subresource %s", "exec\n2026-12-01 INFO gatewatch: all good\x00\x1b[2J")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\x0a2026-12-01 INFO gatewatch: all good\\x00\\x1b[2J" in lines[0]


def test_a_traceback_is_bounded_too():
    stream = io.StringIO()
    logger = logger_writing_to(stream)
    try:
        raise ValueError("y" * 1_000_000)
    except ValueError:
        logger.exception("evaluation failed")
    assert len(stream.getvalue()) < LOG_MESSAGE_LIMIT + LOG_TRACEBACK_LIMIT
    assert "Traceback" in stream.getvalue()


def test_reason_phrases_are_one_line_of_visible_ascii():
    phrase = reason_phrase("webhook 'pods' takes pods, not pods/ex\x00ec\r\nX-Injected: 1 \u2028 caf\u00e9 " + "z" * 500)
    assert all(0x20 <= ord(char) <= 0x7E for char in phrase)
    assert len(phrase) <= 200
    assert phrase.startswith("webhook 'pods' takes pods, not pods/ex?ec??X-Injected: 1 ? caf? zzz")
    assert reason_phrase("\x00\x01") == "??" and reason_phrase("") == "error"


def test_printable_keeps_ordinary_text_as_it_is():
    assert printable("request.object.spec: expected an object, got null", 1000) == (
        "request.object.spec: expected an object, got null")
