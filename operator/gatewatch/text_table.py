"""Plain-text tables for the offline commands' reports (check, replay and its STATS and sequence sections)."""
from __future__ import annotations

from typing import Any, Sequence, TextIO


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """``rows`` under ``header``, each column as wide as its widest cell, two spaces apart."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
