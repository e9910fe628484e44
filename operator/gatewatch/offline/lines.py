"""Audit-log lines: opening a log (plain, gzip or stdin), parsing a line, and skimming one.

Parsing (``parse_line``) is msgspec's, with the stdlib parser behind it for
what msgspec refuses and the stdlib accepts (NaN and Infinity, lone
surrogates, a byte-order mark), so no line accepted before is refused now.
Not orjson, which writes the alerts: orjson reads an integer beyond 64 bits
as a float (a changed value, not a refusal, so no fallback would see it
without scanning every line first, which cost three times the parse);
msgspec reads it exactly, and parses audit lines at least as fast.

Skimming (``skim_line``) is how replay reads the events no rule can match
(most of a log: reads, leases, status updates) without building them:
msgspec decodes the line against a small schema (a struct, ``SkimmedEvent``), which
validates the whole line as JSON but builds only the fields replay needs to
decide (kind, apiVersion, verb, auditID, stage, objectRef, the authorization
decision). A line whose skim is not plain (a field of an odd type, something
msgspec refuses) is parsed whole instead, so the skim changes what replay
costs, never what it says. A block of lines is skimmed in one call
(``skim_block``) when it is plainly one object a line, else line by line.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import sys
from contextlib import ExitStack, contextmanager
from typing import IO, Annotated, Any, Iterator, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gatewatch.documents import DECISION_ANNOTATION

GZIP_MAGIC = b"\x1f\x8b"
_PARSE = msgspec.json.Decoder()


class NotJson(ValueError):
    """A line that is no JSON (the stdlib parser's words)."""


def parse_line(raw: bytes) -> Any:
    """The JSON value of one line; NotJson when neither msgspec nor the stdlib parser reads it."""
    try:
        return _PARSE.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        pass  # the stdlib parser decides, and words the error
    try:
        return json.loads(raw)
    except RecursionError:
        raise NotJson("nested too deeply") from None
    except ValueError as error:  # UnicodeDecodeError included
        raise NotJson(str(error)) from None


class _Annotations(msgspec.Struct, gc=False):
    """Of the event's annotations, only the authorization decision: not a field a skim holds whole."""

    decision: str | UnsetType = msgspec.field(default=UNSET, name=DECISION_ANNOTATION)


class ObjectRef(msgspec.Struct, gc=False):
    """The event's objectRef (audit.k8s.io/v1 ObjectReference): its fields, each a string or absent (UNSET).
    A struct, not a dict: a tenth of a skim's time. A skim holds no other field of it: an index that reads
    one asks for the full parse (gatewatch.offline.candidates)."""

    resource: str | UnsetType = UNSET
    subresource: str | UnsetType = UNSET
    namespace: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    uid: str | UnsetType = UNSET
    apiGroup: str | UnsetType = UNSET
    apiVersion: str | UnsetType = UNSET
    resourceVersion: str | UnsetType = UNSET


class SkimmedEvent(msgspec.Struct, gc=False):
    """The fields of an audit event a skim builds (UNSET: the event has none); any other type (or null) sends
    the line to a full parse. A struct, not a dict: msgspec builds it in about four fifths of the time.

    kind, apiVersion and verb spell out gatewatch.shapes' gate (AUDIT_API_VERSIONS;
    tests/test_replay_shortcut.py checks that a skim never accepts what the gate refuses).
    """

    kind: Literal["Event"] | UnsetType = UNSET
    apiVersion: Literal["audit.k8s.io/v1", "audit.k8s.io/v1beta1"] | UnsetType = UNSET
    auditID: str | UnsetType = UNSET
    stage: str | UnsetType = UNSET
    verb: Annotated[str, msgspec.Meta(min_length=1)] | UnsetType = UNSET
    objectRef: ObjectRef | UnsetType = UNSET
    annotations: _Annotations | UnsetType = UNSET


_SKIM = msgspec.json.Decoder(SkimmedEvent)
# The fields of the audit event a skim holds whole, as the event has them (attributes of a SkimmedEvent).
SKIMMED_FIELDS = frozenset({"kind", "apiVersion", "auditID", "stage", "verb", "objectRef"})
# Of those, the ones a skim holds as a struct of their own, not a mapping (attributes; no other field of theirs held).
SKIMMED_STRUCTS: dict[str, type[msgspec.Struct]] = {"objectRef": ObjectRef}
SKIM_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def _is_utf8(text: bytes) -> bool:
    """msgspec does not check the text of the values a skim skips: a skim is only of UTF-8 text."""
    if text.isascii():
        return True
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def skim_line(raw: bytes) -> SkimmedEvent | None:
    """The line's skim, or None when only a full parse can say what it is (then nothing is lost).

    A skim is an audit event by the shape policy's gate (gatewatch.shapes):
    kind Event or none, an audit.k8s.io apiVersion or none, a verb.
    """
    if not _is_utf8(raw):
        return None
    try:
        skim = _SKIM.decode(raw)
    except SKIM_ERRORS:
        return None
    return None if skim.verb is UNSET else skim


def skim_block(block: bytes) -> tuple[list[SkimmedEvent], list[int]] | None:
    """The skims of a block of whole lines, in one call, and where each line ends (its newline, or the
    block's end); None when only line by line can say (``skim_line`` then reads each).

    One msgspec call for the block saves a copy of every line and a call per line. msgspec reads
    values separated by any whitespace, not lines, so the block is taken only when it is plainly one
    object a line: each line starts with ``{`` and ends with ``}`` (a JSON value cannot go on past
    such a line end: ``}`` then ``{`` is no JSON inside a value), and there are as many lines as
    values. A skim whose verb is UNSET is in the list: the caller parses that line whole, as
    ``skim_line``'s None says.
    """
    if not _is_utf8(block):
        return None
    try:
        skims = _SKIM.decode_lines(block)
    except SKIM_ERRORS:
        return None
    if block and block[-1:] != b"\n":
        block += b"\n"  # the log's last line, without its newline: it ends where the newline would be
    ends: list[int] = []
    append = ends.append
    find = block.find
    start = 0
    for _ in skims:
        end = find(b"\n", start)
        # No line left (more values than lines), or one that is not "{" ... "}" (an empty one included).
        if end < 0 or block[start] != 0x7B or block[end - 1] != 0x7D:
            return None
        append(end)
        start = end + 1
    return (skims, ends) if start == len(block) else None  # else more lines than values


# --- reading a log ---------------------------------------------------------------------


@contextmanager
def open_log(source: str) -> Iterator[tuple[IO[bytes], IO[bytes], int | None]]:
    """(lines, raw file, size): the log's binary stream (gzip known by its magic bytes, ``-``: stdin),
    the file under it (its position is the progress) and the file's size (None for stdin)."""
    with ExitStack() as stack:
        if source == "-":
            raw: IO[bytes] = sys.stdin.buffer
            size = None
        else:
            raw = stack.enter_context(open(source, "rb"))
            size = os.fstat(raw.fileno()).st_size
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
        stream: IO[bytes] = buffered
        if buffered.peek(2)[:2] == GZIP_MAGIC:
            stream = stack.enter_context(gzip.GzipFile(fileobj=buffered))
        yield stream, buffered, size


def is_gzip(source: str) -> bool:
    if source == "-":
        return False
    with open(source, "rb") as file:
        return file.read(2) == GZIP_MAGIC
