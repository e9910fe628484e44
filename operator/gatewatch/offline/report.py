"""How the offline commands report: exit codes, tables, replay's counts and summary, JSON alert lines.

Alerts are written with orjson (compact, UTF-8, several times the stdlib
encoder's speed); what orjson cannot encode (a string with a lone surrogate,
which the stdlib JSON parser accepts in input; an integer beyond 64 bits) is
written by the stdlib encoder instead, so every alert is written.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Mapping, Sequence, TextIO

import click
import orjson

from gatewatch.alerts import alert_line
from gatewatch.decision import Mode
from gatewatch.rules.model import Action
from gatewatch.text_table import print_table

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2
# How many malformed lines (and field warnings) to list before only counting them.
MALFORMED_LISTED = 20
# What a bug of ours looks like on odd input; reported per object or line
# (with the input's location) instead of ending the run in a traceback.
# RecursionError: input nested deeper than Python recurses.
UNEXPECTED = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)


def unexpected(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "cannot evaluate this input: it is nested too deeply"
    return f"cannot evaluate this input ({type(error).__name__}: {error}); please report it as a gatewatch bug"


def effect_text(effect: Action | None) -> str:
    return "none" if effect is None else effect.value


def text(value: Any) -> str:
    return str(getattr(value, "value", value))


def alert_bytes(alert: Mapping[str, Any]) -> bytes:
    """One alert as a JSON line, newline included."""
    try:
        return orjson.dumps(alert, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):  # a lone surrogate, an integer beyond 64 bits
        return (alert_line(alert) + "\n").encode("utf-8", "surrogatepass")


class LineWriter:
    """JSON lines to ``out``, written in large blocks (the bytes themselves when ``out`` has a binary buffer)."""

    _BLOCK = 1 << 20

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._binary: IO[bytes] | None = getattr(out, "buffer", None)
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self._BLOCK:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        block = b"".join(self._pending)
        self._pending, self._size = [], 0
        if self._binary is not None:
            self._out.flush()  # what was written as text before goes first
            self._binary.write(block)
            self._binary.flush()
        else:
            self._out.write(block.decode("utf-8", "surrogatepass"))


# --- replay ---------------------------------------------------------------------------


@dataclass
class ReplayStats:
    """What a replay counts; a worker's counts add up into the whole run's (``merge``)."""

    lines: int = 0
    events: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    malformed_count: int = 0
    warnings: list[tuple[int, str]] = field(default_factory=list)
    warning_count: int = 0
    warned_events: int = 0
    exempt: int = 0
    refused_by_authorization: int = 0
    matches: int = 0
    matched_requests: int = 0
    denied_requests: int = 0
    denied_but_refused: int = 0
    by_rule: Counter = field(default_factory=Counter)
    by_namespace: Counter = field(default_factory=Counter)
    by_user: Counter = field(default_factory=Counter)

    def malformed_line(self, line_no: int, reason: str) -> None:
        self.malformed_count += 1
        if len(self.malformed) < MALFORMED_LISTED:
            self.malformed.append((line_no, reason))

    def field_warnings(self, line_no: int, warnings: Sequence[str]) -> None:
        """Fields of the wrong type, set aside while evaluating the event of ``line_no``."""
        self.warned_events += 1
        self.warning_count += len(warnings)
        for warning in warnings:
            if len(self.warnings) < MALFORMED_LISTED:
                self.warnings.append((line_no, warning))

    def merge(self, other: "ReplayStats") -> None:
        """Add a later chunk's counts (its lines come after this one's)."""
        for name in ("lines", "events", "malformed_count", "warning_count", "warned_events", "exempt",
                     "refused_by_authorization"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.malformed = (self.malformed + other.malformed)[:MALFORMED_LISTED]
        self.warnings = (self.warnings + other.warnings)[:MALFORMED_LISTED]


def print_replay_summary(stats: ReplayStats, heading: str, out: TextIO) -> None:
    out.write(f"Matches by rule ({heading})\n")
    print_table(
        ("COUNT", "EFFECT", "RULE ID", "RULE"),
        [(str(n), effect, rule_id, name) for (rule_id, name, effect), n in stats.by_rule.most_common()],
        out,
    )
    out.write("\nMatches by namespace\n")
    print_table(("COUNT", "NAMESPACE"), [(str(n), ns) for ns, n in stats.by_namespace.most_common()], out)
    out.write("\nMatches by user\n")
    print_table(("COUNT", "USER"), [(str(n), user) for user, n in stats.by_user.most_common()], out)


def print_input_problems(stats: ReplayStats, source: str, err: TextIO) -> None:
    """Malformed lines (skipped) and fields of the wrong type (set aside), with their line numbers."""
    for line_no, reason in stats.malformed:
        click.echo(f"{source}:{line_no}: skipped malformed line: {reason}", err=True, file=err)
    hidden = stats.malformed_count - len(stats.malformed)
    if hidden > 0:
        click.echo(f"{source}: ... and {hidden} more malformed line(s)", err=True, file=err)
    for line_no, warning in stats.warnings:
        click.echo(f"{source}:{line_no}: warning: {warning}: ignored for matching", err=True, file=err)
    hidden = stats.warning_count - len(stats.warnings)
    if hidden > 0:
        click.echo(f"{source}: ... and {hidden} more field warning(s)", err=True, file=err)


def summary_line(stats: ReplayStats, *, mode: Mode, every_event: bool) -> str:
    warned = (f", {stats.warning_count} field(s) of the wrong type ignored in {stats.warned_events} event(s)"
              if stats.warning_count else "")
    if every_event:
        return (
            f"{stats.events} event(s) evaluated, {stats.matches} (auditID, rule) match(es), "
            f"{stats.malformed_count} malformed line(s){warned}"
        )
    refused_anyway = f" ({stats.denied_but_refused} refused by the API server anyway)" if stats.denied_but_refused else ""
    return (
        f"{stats.events} event(s) replayed, {stats.matches} match(es) in {stats.matched_requests} request(s), "
        f"{stats.denied_requests} request(s) {mode.value} mode would have denied{refused_anyway}, "
        f"{stats.malformed_count} malformed line(s){warned}, {stats.exempt} event(s) in exempt namespaces skipped, "
        f"{stats.refused_by_authorization} event(s) refused by authorization skipped"
    )
