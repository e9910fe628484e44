"""A bounded file of alert lines not yet delivered, so a restart keeps what the HTTP sink buffered.

The file is NDJSON, one alert per line, oldest first: the lines the HTTP sink
(``gatewatch.alert_sinks.HttpAlertSink``) holds, as it builds them. Appending
is cheap; lines that have left the buffer (delivered, or dropped because the
buffer was full) stay in the file until the sink rewrites it (when they
outnumber the live ones, or the file would pass ``max_bytes``) or empties it
(when everything is delivered). So after a crash the next start sends every
line still in the file again: delivery is at least once, never zero times.

``max_bytes`` bounds the file: when the buffered lines do not all fit, the
newest that fit are kept (the same oldest-first order in which the buffer
drops). The sink counts nothing as lost for that: the lines are still in
memory, only a restart would lose them, and the sink logs it.

Every method blocks on file I/O (call it in a thread) and is serialized by a
lock: a write a cancelled task started may still run while shutdown writes.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

from gatewatch.errors import GatewatchError

logger = logging.getLogger(__name__)


class AlertSpill:
    """The spill file at ``path``, at most ``max_bytes`` long."""

    def __init__(self, path: str | Path, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise GatewatchError(f"{path}: the alert spill file's size limit must be at least 1 byte, not {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.size = 0  # bytes in the file, as this process wrote or found it
        self.lines = 0  # lines in the file

    def __repr__(self) -> str:
        return f"AlertSpill({str(self.path)!r}, max_bytes={self.max_bytes})"

    def load(self) -> list[str]:
        """The lines a previous process left, oldest first (at start; nothing else has written yet).

        A torn last line (a crash mid-write) and lines that are not JSON objects are skipped and
        logged. A file that cannot be read raises ``GatewatchError`` naming it.
        """
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            except OSError as error:
                raise GatewatchError(f"{self.path}: cannot read the alert spill file: "
                                     f"{error.strerror or error}") from None
            lines: list[str] = []
            skipped = 0
            for raw in data.split(b"\n"):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                    valid = isinstance(json.loads(text), dict)
                except ValueError:
                    valid = False
                if valid:
                    lines.append(text)
                else:
                    skipped += 1
            if skipped:
                logger.warning("%s: skipped %d line(s) that are not whole alerts (a write cut short)",
                               self.path, skipped)
            self._write(lines)  # start from a clean file: only whole lines, within the bound
            return lines

    def append(self, lines: Sequence[str]) -> bool:
        """Add ``lines`` at the end; False (nothing written) when they would pass ``max_bytes``."""
        if not lines:
            return True
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            if self.size + len(data) > self.max_bytes:
                return False
            try:
                with self.path.open("ab") as file:
                    file.write(data)
                    file.flush()
            except OSError as error:
                raise GatewatchError(f"{self.path}: cannot write the alert spill file: "
                                     f"{error.strerror or error}") from None
            self.size += len(data)
            self.lines += len(lines)
            return True

    def rewrite(self, lines: Sequence[str]) -> int:
        """Replace the file with the newest of ``lines`` that fit; how many were kept."""
        with self._lock:
            return self._write(lines)

    def clear(self) -> None:
        """Everything was delivered: an empty file."""
        with self._lock:
            self._write(())

    def _write(self, lines: Sequence[str]) -> int:
        encoded = [(line + "\n").encode() for line in lines]
        kept: list[bytes] = []
        size = 0
        for data in reversed(encoded):  # newest first, until the bound
            if size + len(data) > self.max_bytes:
                break
            kept.append(data)
            size += len(data)
        kept.reverse()
        temporary = self.path.with_name(f".{self.path.name}.new")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(b"".join(kept))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)  # never half a file
        except OSError as error:
            raise GatewatchError(f"{self.path}: cannot write the alert spill file: "
                                 f"{error.strerror or error}") from None
        self.size, self.lines = size, len(kept)
        return len(kept)
