"""Log and error text that input cannot stretch or forge.

Messages often quote what a caller sent (a field's value, a subresource); a
body can make that megabytes long or put a newline or NUL in it, which would
forge log lines or break an HTTP reason phrase. ``printable`` makes such text
one bounded line; ``BoundedFormatter`` caps every record `gatewatch run`
writes (traceback included), so no log line can take the rest of the log down.
"""
from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What an HTTP reason phrase may carry: visible ASCII and spaces (RFC 9112 allows obs-text too; not needed).
_NOT_REASON = re.compile("[^\x20-\x7e]")
# A record's message, and its traceback, each at most this many characters.
LOG_MESSAGE_LIMIT = 4096
LOG_TRACEBACK_LIMIT = 16384


def shorten(text: str, limit: int) -> str:
    """``text``, cut to at most ``limit`` characters with the count of what was cut."""
    if len(text) <= limit:
        return text
    marker = f"... [{len(text) - limit:,} more characters]"
    return text[: max(0, limit - len(marker))] + marker


def printable(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: control characters as ``\\xNN`` escapes."""
    text = shorten(text, limit * 4)  # before escaping: the escapes below cannot grow it past 4x
    return shorten(_CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text), limit)


def reason_phrase(text: str, limit: int = 200) -> str:
    """An HTTP reason phrase: visible ASCII on one line, at most ``limit`` characters."""
    one_line = " ".join(_NOT_REASON.sub("?", shorten(text, limit * 2)).split())
    return shorten(one_line, limit) or "error"


class BoundedFormatter(logging.Formatter):
    """A Formatter whose records are bounded: the message is one printable line of at most
    LOG_MESSAGE_LIMIT characters, a traceback at most LOG_TRACEBACK_LIMIT."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, LOG_MESSAGE_LIMIT)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return shorten(super().formatException(ei), LOG_TRACEBACK_LIMIT)

    def formatStack(self, stack_info: str) -> str:
        return shorten(super().formatStack(stack_info), LOG_TRACEBACK_LIMIT)


__all__ = ["BoundedFormatter", "LOG_MESSAGE_LIMIT", "LOG_TRACEBACK_LIMIT", "printable", "reason_phrase", "shorten"]
