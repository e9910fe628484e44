"""Offline runs: `gatewatch check` over manifests and `gatewatch replay` over audit logs.

Both go through the same path as the operator: input -> document -> engine ->
decision -> ECS alert, so what they report is what the admission controller
would have done.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import sys
from contextlib import ExitStack, contextmanager
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence, TextIO

import click

from gatewatch.alerts import alert_line, build_alert
from gatewatch.decision import Mode, decide
from gatewatch.documents import document_from_audit_event
from gatewatch.engine import Match, RuleEngine, event_time
from gatewatch.errors import GatewatchError, InputError
from gatewatch.rules.model import Action, RuleSet

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2
# How many malformed line numbers to list before only counting them.
_MALFORMED_LISTED = 20
# Files larger than this get a progress bar (when asked for).
_PROGRESS_MIN_BYTES = 1 << 20


# --- check -------------------------------------------------------------------


@dataclass
class CheckFinding:
    location: str
    subject: str
    match: Match
    effect: Action
    alert: dict[str, Any]


def run_check(
    ruleset: RuleSet,
    paths: Sequence[Path],
    *,
    output_format: str,
    fail_on: Action,
    mode: Mode,
    out: TextIO,
    err: TextIO,
) -> int:
    """Evaluate every Pod (and AdmissionReview) in ``paths``; returns the exit code."""
    from gatewatch.workloads import document_from_item, iter_input_files, read_input_file

    engine = RuleEngine(ruleset)
    findings: list[CheckFinding] = []
    bad_input = False
    checked = 0
    try:
        files = list(iter_input_files(paths))
    except InputError as error:
        click.echo(f"gatewatch: {error}", err=True, file=err)
        return EXIT_BAD_INPUT
    for source in files:
        # One unreadable file is reported and the others still checked.
        try:
            for item in read_input_file(source):
                if item.category == "skipped":
                    click.echo(f"gatewatch: {item.location}: skipped: {item.skip_reason}", err=True, file=err)
                    continue
                try:
                    document = document_from_item(item)
                except GatewatchError as error:
                    click.echo(f"gatewatch: {error}", err=True, file=err)
                    bad_input = True
                    continue
                checked += 1
                findings.extend(_check_document(engine, document, item, mode=mode))
        except InputError as error:
            click.echo(f"gatewatch: {error}", err=True, file=err)
            bad_input = True

    if output_format == "json":
        for finding in findings:
            out.write(alert_line(finding.alert) + "\n")
    else:
        _print_check_table(findings, mode, out)
    reached = [f for f in findings if f.match.rule.action >= fail_on]
    click.echo(
        f"{checked} object(s) checked, {len(findings)} match(es), "
        f"{len(reached)} at or above --fail-on {fail_on.value}",
        err=True,
        file=err,
    )
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_FINDINGS if reached else EXIT_OK


def _check_document(engine: RuleEngine, document: dict[str, Any], item: Any, *, mode: Mode) -> list[CheckFinding]:
    # Offline there is no history: every query match of a new_terms rule is
    # reported, marked as such.
    matches = engine.evaluate(document, new_terms=False)
    decision = decide(matches, mode=mode)
    verdict = "allowed" if decision.allowed else "denied"
    return [
        CheckFinding(
            location=item.location,
            subject=item.subject,
            match=outcome.match,
            effect=outcome.effect,
            alert=build_alert(
                outcome.match, document, effect=outcome.effect, mode=mode, decision=verdict, file_path=str(item.source)
            ),
        )
        for outcome in decision.outcomes
    ]


def _print_check_table(findings: Sequence[CheckFinding], mode: Mode, out: TextIO) -> None:
    """Grouped by object: what each rule would do in ``mode``, strongest first."""
    if not findings:
        out.write("no rule matched\n")
        return
    by_object: dict[tuple[str, str], list[CheckFinding]] = {}
    for finding in findings:
        by_object.setdefault((finding.location, finding.subject), []).append(finding)
    for (location, subject), group in by_object.items():
        out.write(f"{location}  {subject}\n")
        for finding in sorted(group, key=lambda f: f.effect, reverse=True):
            rule = finding.match.rule
            marker = " (new_terms: every match reported)" if finding.match.is_new_terms else ""
            techniques = ",".join(rule.technique_ids) or "-"
            out.write(
                f"  {finding.effect.value.upper():<5}  [{techniques}] {rule.name}{marker}"
                f"  severity={_text(rule.severity)} id={rule.id}\n"
            )
    out.write(f"(effects as in {mode.value} mode; a rule's action caps what it can do)\n")


# --- replay ------------------------------------------------------------------


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    malformed_count: int = 0
    exempt: int = 0
    matches: int = 0
    denied_requests: int = 0
    by_rule: Counter = field(default_factory=Counter)
    by_namespace: Counter = field(default_factory=Counter)
    by_user: Counter = field(default_factory=Counter)

    def malformed_line(self, line_no: int, reason: str) -> None:
        self.malformed_count += 1
        if len(self.malformed) < _MALFORMED_LISTED:
            self.malformed.append((line_no, reason))


@dataclass
class _Pending:
    at: datetime
    line_no: int
    document: dict[str, Any]
    matches: list[Match]


def run_replay(
    ruleset: RuleSet,
    source: str,
    *,
    output_format: str,
    mode: Mode,
    progress: bool,
    out: TextIO,
    err: TextIO,
    exempt_namespaces: frozenset[str] = frozenset(),
) -> int:
    """Replay audit-log lines; returns the exit code (2 only when the input cannot be read)."""
    engine = RuleEngine(ruleset)
    stats = ReplayStats()
    pending: list[_Pending] = []
    try:
        with _open_lines(source, progress=progress, err=err) as lines:
            for line_no, raw in lines:
                stats.lines += 1
                document = _audit_document(raw, line_no, stats)
                if document is None:
                    continue
                stats.events += 1
                if exempt_namespaces and _namespace(document) in exempt_namespaces:
                    stats.exempt += 1
                    continue
                # First pass streams: query matching only. new_terms history
                # needs event-time order, so matches wait for the sort below
                # (memory grows with matches, not with the log).
                matches = engine.evaluate(document, new_terms=False)
                if matches:
                    pending.append(_Pending(event_time(document), line_no, document, matches))
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as error:
        click.echo(f"gatewatch: cannot read {source}: {error}", err=True, file=err)
        return EXIT_BAD_INPUT

    pending.sort(key=lambda p: (p.at, p.line_no))
    for item in pending:
        matches = engine.apply_new_terms(item.matches, at=item.at)
        if not matches:
            continue
        decision = decide(matches, mode=mode)
        if not decision.allowed:
            stats.denied_requests += 1
        audit = item.document["kubernetes"]["audit"]
        for outcome in decision.outcomes:
            stats.matches += 1
            rule = outcome.match.rule
            stats.by_rule[(rule.id, rule.name, _text(outcome.effect))] += 1
            stats.by_namespace[_namespace(item.document) or "-"] += 1
            stats.by_user[(audit.get("user") or {}).get("username") or "-"] += 1
            if output_format == "json":
                alert = build_alert(
                    outcome.match,
                    item.document,
                    effect=outcome.effect,
                    mode=mode,
                    decision="allowed" if decision.allowed else "denied",
                    extra={"replay": {"line": item.line_no}},
                )
                out.write(alert_line(alert) + "\n")
    if output_format == "table":
        _print_replay_summary(stats, mode, out)
    _print_malformed(stats, source, err)
    click.echo(
        f"{stats.events} event(s) replayed, {stats.matches} match(es), "
        f"{stats.denied_requests} request(s) {mode.value} mode would have denied, "
        f"{stats.malformed_count} malformed line(s), {stats.exempt} event(s) in exempt namespaces skipped",
        err=True,
        file=err,
    )
    return EXIT_OK


def _namespace(document: Mapping[str, Any]) -> str | None:
    return (document["kubernetes"]["audit"].get("objectRef") or {}).get("namespace")


def _audit_document(raw: str, line_no: int, stats: ReplayStats) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        event = json.loads(raw)
    except ValueError as error:
        stats.malformed_line(line_no, f"not JSON: {error}")
        return None
    if not isinstance(event, Mapping):
        stats.malformed_line(line_no, "not a JSON object")
        return None
    try:
        return document_from_audit_event(event)
    except InputError as error:
        stats.malformed_line(line_no, error.reason)
        return None


@contextmanager
def _open_lines(source: str, *, progress: bool, err: TextIO) -> Iterator[Iterator[tuple[int, str]]]:
    """Numbered text lines of a file, a gzip file (known by its magic bytes) or stdin."""
    with ExitStack() as stack:
        if source == "-":
            raw: IO[bytes] = sys.stdin.buffer
            size = None
        else:
            raw = stack.enter_context(open(source, "rb"))
            size = os.fstat(raw.fileno()).st_size
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
        stream: IO[bytes] = buffered
        if buffered.peek(2)[:2] == b"\x1f\x8b":
            stream = stack.enter_context(gzip.GzipFile(fileobj=buffered))
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        bar = None
        if progress and size is not None and size >= _PROGRESS_MIN_BYTES:
            bar = stack.enter_context(
                click.progressbar(length=size, label=f"replaying {source}", file=err)
            )
        yield _numbered_lines(text, position=buffered.tell if bar is not None else None, bar=bar)


def _numbered_lines(text: TextIO, *, position: Any, bar: Any) -> Iterator[tuple[int, str]]:
    done = 0
    for line_no, line in enumerate(text, start=1):
        if bar is not None and line_no % 4096 == 0:
            now = position()
            bar.update(now - done)
            done = now
        yield line_no, line


def _print_replay_summary(stats: ReplayStats, mode: Mode, out: TextIO) -> None:
    out.write(f"Matches by rule ({mode.value} mode)\n")
    _print_table(
        ("COUNT", "EFFECT", "RULE ID", "RULE"),
        [(str(n), effect, rule_id, name) for (rule_id, name, effect), n in stats.by_rule.most_common()],
        out,
    )
    out.write("\nMatches by namespace\n")
    _print_table(("COUNT", "NAMESPACE"), [(str(n), ns) for ns, n in stats.by_namespace.most_common()], out)
    out.write("\nMatches by user\n")
    _print_table(("COUNT", "USER"), [(str(n), user) for user, n in stats.by_user.most_common()], out)


def _print_malformed(stats: ReplayStats, source: str, err: TextIO) -> None:
    for line_no, reason in stats.malformed:
        click.echo(f"{source}:{line_no}: skipped malformed line: {reason}", err=True, file=err)
    hidden = stats.malformed_count - len(stats.malformed)
    if hidden > 0:
        click.echo(f"{source}: ... and {hidden} more malformed line(s)", err=True, file=err)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))
