"""Offline runs: `gatewatch check` over manifests and `gatewatch replay` over audit logs.

Both go through the same path as the operator: input -> document -> engine ->
decision -> ECS alert, so what they report is what the admission controller
would have done.

Input is untrusted: an object or line with a field of the wrong type is
reported (file, line, field) and the run carries on; it never ends in a
traceback.
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
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence, TextIO

import click

from gatewatch.alerts import alert_line, build_alert
from gatewatch.decision import Mode, decide, effect_of
from gatewatch.documents import (
    DECISION_ANNOTATION,
    check_audit_event,
    document_from_audit_event,
    pod_problem,
)
from gatewatch.engine import Match, RuleEngine, event_time
from gatewatch.errors import GatewatchError, InputError
from gatewatch.replay_sequences import SequenceRules
from gatewatch.replay_stats import StatsRules
from gatewatch.rules.model import Action, RuleSet
from gatewatch.rules.packs import control_tags

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2
# How many malformed line numbers to list before only counting them.
_MALFORMED_LISTED = 20
# Files larger than this get a progress bar (when asked for).
_PROGRESS_MIN_BYTES = 1 << 20
# What a bug of ours looks like on odd input; reported per object or line
# (with the input's location) instead of ending the run in a traceback.
# RecursionError: input nested deeper than Python recurses (reading refuses
# objects that contain themselves, see workloads.py).
_UNEXPECTED = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)


# --- input shape ---------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_mapping(value: Any) -> bool:
    # dict first: JSON and YAML give dicts, and the ABC check costs more.
    return type(value) is dict or isinstance(value, Mapping)


def _event_refusal(event: Mapping[str, Any]) -> str | None:
    """Beyond documents.py: the event's fields replay reads (namespace, user, stage, response code)."""
    object_ref = event.get("objectRef") or {}
    problem = (
        _non_string(event, ("auditID", "stage"), "{}")
        or _non_string(object_ref, object_ref.keys(), "objectRef.{}")
        or _non_string(event.get("user") or {}, ("username", "uid"), "user.{}")
    )
    if problem is not None:
        return problem
    annotations = event.get("annotations") or {}
    for key, value in annotations.items():
        if type(value) is not str:
            return f"annotations[{key!r}]: expected a string, got {_type_name(value)}"
    status = event.get("responseStatus")
    if status is not None:
        if not _is_mapping(status):
            return f"responseStatus: expected an object, got {_type_name(status)}"
        code = status.get("code")
        if code is not None and type(code) is not int:
            return f"responseStatus.code: expected an integer, got {_type_name(code)}"
    return None


def _non_string(values: Mapping[str, Any], keys: Iterable[str], field: str) -> str | None:
    """Why the first of ``keys`` present in ``values`` but not a string is refused (``field`` names it)."""
    for key in keys:
        value = values.get(key)
        if value is not None and type(value) is not str:
            return f"{field.format(key)}: expected a string, got {_type_name(value)}"
    return None


def _request_object_refusal(event: Mapping[str, Any]) -> str | None:
    """Beyond documents.py: the Pod fields rules, reports and alerts read (after documents.py's own checks)."""
    object_ref = event.get("objectRef") or _NOTHING
    request_object = event.get("requestObject")
    if _is_mapping(request_object) and object_ref.get("resource") == "pods" and not object_ref.get("subresource"):
        return pod_problem(request_object, prefix="requestObject.")
    return None


# --- check -------------------------------------------------------------------


@dataclass
class CheckFinding:
    location: str
    subject: str
    match: Match
    effect: Action | None  # None: the mode lets the rule do nothing (off)
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
    """Evaluate every Pod (and AdmissionReview) in ``paths``; returns the exit code.

    The exit status depends on the matching rules' actions and ``fail_on``,
    never on ``mode`` (which only sets each match's effect): 1 when a match
    reaches ``fail_on``; 2 when any input could not be read or evaluated.
    """
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
                    _check_item_shape(item)
                    document = document_from_item(item)
                    found = _check_document(engine, document, item, mode=mode)
                except GatewatchError as error:
                    click.echo(f"gatewatch: {error}", err=True, file=err)
                    bad_input = True
                    continue
                except _UNEXPECTED as error:
                    click.echo(f"gatewatch: {item.location}: {_unexpected(error)}", err=True, file=err)
                    bad_input = True
                    continue
                checked += 1
                findings.extend(found)
        except InputError as error:
            click.echo(f"gatewatch: {error}", err=True, file=err)
            bad_input = True

    if output_format == "json":
        for finding in findings:
            out.write(alert_line(finding.alert) + "\n")
    elif checked:  # nothing checked: no table, and no "no rule matched" to mislead
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


def _check_item_shape(item: Any) -> None:
    """InputError (file, line, field) for a Pod or AdmissionReview with a field of the wrong type."""
    problem = None
    if item.category == "pod" and item.pod is not None:
        problem = pod_problem(item.pod)
    elif item.category == "admission_review" and _is_mapping(item.review):
        problem = _review_problem(item.review)
    if problem is not None:
        raise InputError(f"{item.subject}: {problem}", source=item.source, line=item.line)


def _review_problem(review: Mapping[str, Any]) -> str | None:
    """What documents.parse_admission_request leaves unchecked: value types of the strings
    it compares, the user, and the reviewed Pod."""
    wrapped = "request" in review
    request = review.get("request") if wrapped else review
    prefix = "request." if wrapped else ""
    if wrapped and type(review.get("apiVersion", "")) is not str:
        return f"apiVersion: expected a string, got {_type_name(review['apiVersion'])}"
    if not _is_mapping(request):
        return None  # parse_admission_request says so
    if type(request.get("operation", "")) is not str:
        return f"{prefix}operation: expected a string, got {_type_name(request['operation'])}"
    user = request.get("userInfo")
    if _is_mapping(user):
        for key in ("username", "uid"):
            value = user.get(key)
            if value is not None and type(value) is not str:
                return f"{prefix}userInfo.{key}: expected a string, got {_type_name(value)}"
        groups = user.get("groups")
        if groups is not None and (type(groups) is not list or not all(type(g) is str for g in groups)):
            return f"{prefix}userInfo.groups: expected a list of strings"
    resource, obj = request.get("resource"), request.get("object")
    if _is_mapping(resource) and resource.get("resource") == "pods" and not request.get("subResource") and _is_mapping(obj):
        return pod_problem(obj, prefix=f"{prefix}object.")
    return None


def _unexpected(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "cannot evaluate this input: it is nested too deeply"
    return f"cannot evaluate this input ({type(error).__name__}: {error}); please report it as a gatewatch bug"


def _check_document(engine: RuleEngine, document: dict[str, Any], item: Any, *, mode: Mode) -> list[CheckFinding]:
    # Offline there is no history: every query match of a new_terms rule is
    # reported, marked as such. Every match is listed, in every mode; in off
    # mode its effect is none.
    matches = engine.evaluate(document, new_terms=False)
    verdict = "allowed" if decide(matches, mode=mode).allowed else "denied"
    findings = []
    for match in matches:
        effect = effect_of(match.rule.action, mode)
        alert = build_alert(match, document, effect=effect, mode=mode, decision=verdict, file_path=str(item.source))
        findings.append(CheckFinding(location=item.location, subject=item.subject, match=match, effect=effect, alert=alert))
    return findings


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
        for finding in sorted(group, key=lambda f: f.match.rule.action if f.effect is None else f.effect, reverse=True):
            rule = finding.match.rule
            marker = " (new_terms: every match reported)" if finding.match.is_new_terms else ""
            techniques = ",".join(rule.technique_ids) or "-"
            out.write(
                f"  {_effect_text(finding.effect).upper():<5}  [{techniques}] {rule.name}{marker}"
                f"  severity={_text(rule.severity)} id={rule.id}\n"
            )
            detail = " ".join(control_tags(rule))
            fields = finding.alert.get("gatewatch", {}).get("offending_fields") or []
            if fields:
                detail += (" at " if detail else "at ") + ", ".join(fields)
            if detail:
                out.write(f"         {detail}\n")
    out.write(f"(effects as in {mode.value} mode; a rule's action caps what it can do)\n")


def _effect_text(effect: Action | None) -> str:
    return "none" if effect is None else effect.value


# --- replay ------------------------------------------------------------------

# One request, several audit events (one per stage, same auditID): the verdict
# comes from ResponseComplete, else from the latest stage in this order.
_STAGE_RANK = {"RequestReceived": 0, "ResponseStarted": 1, "Panic": 2, "ResponseComplete": 3}
_UNKNOWN_STAGE_RANK = -1


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    malformed_count: int = 0
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
        if len(self.malformed) < _MALFORMED_LISTED:
            self.malformed.append((line_no, reason))


@dataclass(slots=True)
class _Verdict:
    """The event that decides a request's verdict, and its query matches (empty: none).

    Keeps the event's JSON text (for JSON alerts only), not its document: a
    str costs the garbage collector nothing, while tens of thousands of
    retained documents made its full collections the largest cost of
    replaying a big log. The document is rebuilt for the requests that
    become JSON alerts.
    """

    rank: int
    line_no: int
    matches: list[Match]
    refused: bool  # the API server answered >= 400: refused whatever gatewatch did
    at: datetime | None = None
    raw: str | None = None
    namespace: str = "-"
    user: str = "-"


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
    """Replay audit-log lines; returns the exit code (2 only when the input cannot be read).

    Reports requests, not events: the events of one auditID give one verdict.
    Only requests with a match are remembered (auditID, matches, JSON line), so
    memory grows with matches, not with the log.
    """
    engine = RuleEngine(ruleset)
    stats_rules = StatsRules.of(ruleset)  # ES|QL STATS rules: fed every document, run on their schedule at the end
    sequence_rules = SequenceRules.of(ruleset)  # EQL sequences: fed every document, matched in event time at the end
    stats = ReplayStats()
    by_audit_id: dict[str, _Verdict] = {}  # requests whose highest stage so far matched
    settled: dict[str, int] = {}  # requests whose highest stage so far did not: that stage's rank
    anonymous: list[_Verdict] = []  # events without an auditID: each its own request
    try:
        with _open_lines(source, progress=progress, err=err) as lines:
            for line_no, raw in lines:
                stats.lines += 1
                event = _audit_event(raw, line_no, stats, pod_fields=engine.reads_pod_fields)
                if event is None:
                    continue
                # No document is built when no rule can match (most events are
                # reads): _audit_event has already refused what building it would.
                may_match = engine.may_match_audit_event(event)
                document = None
                if may_match:
                    document = _document(event, line_no, stats, pod_fields=engine.reads_pod_fields)
                    if document is None:
                        continue
                    if stats_rules.runners:
                        stats_rules.add(document)
                    if sequence_rules.runners:
                        sequence_rules.add(document, line=line_no)
                stats.events += 1
                if exempt_namespaces and (event.get("objectRef") or _NOTHING).get("namespace") in exempt_namespaces:
                    stats.exempt += 1
                    continue
                # Authorization refused it: the webhook never sees such a request.
                if (event.get("annotations") or _NOTHING).get(DECISION_ANNOTATION) == "forbid":
                    stats.refused_by_authorization += 1
                    may_match = False
                audit_id = event.get("auditID") or None
                if not may_match and (audit_id is None or (audit_id not in by_audit_id and audit_id not in settled)):
                    continue  # nothing to record: no match, and no earlier stage that matched
                # The JSON line is kept only to write alerts from it.
                kept_line = raw if output_format == "json" else None
                verdict = _verdict(engine, event, document if may_match else None, kept_line, line_no, stats)
                if verdict is not None:
                    _keep(verdict, audit_id, by_audit_id=by_audit_id, settled=settled, anonymous=anonymous)
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as error:
        click.echo(f"gatewatch: cannot read {source}: {error}", err=True, file=err)
        return EXIT_BAD_INPUT

    # new_terms history needs event-time order: decided after the streaming pass.
    requests = [*by_audit_id.values(), *anonymous]
    requests.sort(key=lambda v: (v.at, v.line_no))
    for request in requests:
        _report_request(engine, request, stats, mode=mode, output_format=output_format, out=out)
    if output_format == "table":
        _print_replay_summary(stats, mode, out)
    stats_results = stats_rules.report(mode=mode, output_format=output_format, out=out)
    sequences = sequence_rules.report(mode=mode, output_format=output_format, out=out)
    _print_malformed(stats, source, err)
    refused_anyway = f" ({stats.denied_but_refused} refused by the API server anyway)" if stats.denied_but_refused else ""
    click.echo(
        f"{stats.events} event(s) replayed, {stats.matches} match(es) in {stats.matched_requests} request(s), "
        f"{stats.denied_requests} request(s) {mode.value} mode would have denied{refused_anyway}, "
        f"{stats.malformed_count} malformed line(s), {stats.exempt} event(s) in exempt namespaces skipped, "
        f"{stats.refused_by_authorization} event(s) refused by authorization skipped"
        + (f", {stats_results} ES|QL STATS result(s) from {len(stats_rules.runners)} rule(s)"
           if stats_rules.runners else "")
        + sequence_rules.summary(sequences),
        err=True,
        file=err,
    )
    return EXIT_OK


_NOTHING: Mapping[str, Any] = {}


def _keep(
    verdict: _Verdict,
    audit_id: str | None,
    *,
    by_audit_id: dict[str, _Verdict],
    settled: dict[str, int],
    anonymous: list[_Verdict],
) -> None:
    """Record ``verdict`` so that each request's highest stage decides, whatever the line order.

    Called for every event a rule could match, and for later stages of those
    requests. A matching stage is kept whole (it may become an alert); a stage
    without a match only as its rank in ``settled`` (the auditID and a number),
    so a ResponseComplete without a match read before an earlier stage that
    matched (rotated logs concatenated newest first) still decides. Memory grows
    with matching requests and, by about a hundred bytes each, with the requests
    a rule could match (the prefilter leaves out reads and other resources), not
    with the log.
    """
    if audit_id is None:
        if verdict.matches:
            anonymous.append(verdict)
        return
    previous = by_audit_id.get(audit_id)
    highest = max(previous.rank if previous is not None else -1, settled.get(audit_id, -1))
    if verdict.rank < highest:
        return  # an earlier stage, read after a later one
    if verdict.matches:
        by_audit_id[audit_id] = verdict  # a tie: the later line
        settled.pop(audit_id, None)
    else:
        by_audit_id.pop(audit_id, None)
        settled[audit_id] = verdict.rank


def _audit_event(raw: str, line_no: int, stats: ReplayStats, *, pod_fields: bool) -> Mapping[str, Any] | None:
    """The line's audit event, if it is JSON and passes every check building its document would make, and replay's."""
    if not raw.strip():
        return None
    try:
        event = json.loads(raw)
    except ValueError as error:
        stats.malformed_line(line_no, f"not JSON: {error}")
        return None
    except RecursionError:
        stats.malformed_line(line_no, "not JSON: nested too deeply")
        return None
    try:
        check_audit_event(event, pod_fields=pod_fields)
    except InputError as error:
        stats.malformed_line(line_no, error.reason)
        return None
    except _UNEXPECTED as error:
        stats.malformed_line(line_no, _unexpected(error))
        return None
    problem = _event_refusal(event) or _request_object_refusal(event)
    if problem is not None:
        stats.malformed_line(line_no, problem)
        return None
    return event


def _document(
    event: Mapping[str, Any], line_no: int, stats: ReplayStats, *, pod_fields: bool
) -> dict[str, Any] | None:
    """The document of an event _audit_event accepted (so documents.py's checks are not repeated)."""
    try:
        return document_from_audit_event(event, checked=True, pod_fields=pod_fields)
    except InputError as error:
        stats.malformed_line(line_no, error.reason)
    except _UNEXPECTED as error:
        stats.malformed_line(line_no, _unexpected(error))
    return None


def _verdict(
    engine: RuleEngine,
    event: Mapping[str, Any],
    document: dict[str, Any] | None,
    raw: str | None,
    line_no: int,
    stats: ReplayStats,
) -> _Verdict | None:
    """The event's query matches (none without ``document``); None when evaluating it failed."""
    code = (event.get("responseStatus") or _NOTHING).get("code")
    verdict = _Verdict(
        rank=_STAGE_RANK.get(event.get("stage"), _UNKNOWN_STAGE_RANK),
        line_no=line_no,
        matches=[],
        refused=code is not None and code >= 400,
    )
    if document is None:
        return verdict
    try:
        verdict.matches = engine.evaluate(document, new_terms=False)
    except _UNEXPECTED as error:
        stats.events -= 1  # counted before it turned out unusable
        stats.malformed_line(line_no, _unexpected(error))
        return None
    if verdict.matches:
        verdict.at, verdict.raw = event_time(document), raw
        verdict.namespace = (event.get("objectRef") or _NOTHING).get("namespace") or "-"
        verdict.user = (event.get("user") or _NOTHING).get("username") or "-"
    return verdict


def _report_request(
    engine: RuleEngine, request: _Verdict, stats: ReplayStats, *, mode: Mode, output_format: str, out: TextIO
) -> None:
    assert request.at is not None
    matches = engine.apply_new_terms(request.matches, at=request.at)
    if not matches:
        return
    denied = not decide(matches, mode=mode).allowed
    stats.matched_requests += 1
    if denied:
        stats.denied_requests += 1
        stats.denied_but_refused += request.refused
    document = (document_from_audit_event(json.loads(request.raw), pod_fields=engine.reads_pod_fields)
                if request.raw is not None else None)
    for match in matches:
        effect = effect_of(match.rule.action, mode)
        stats.matches += 1
        stats.by_rule[(match.rule.id, match.rule.name, _effect_text(effect))] += 1
        stats.by_namespace[request.namespace] += 1
        stats.by_user[request.user] += 1
        if document is not None:
            replay: dict[str, Any] = {"line": request.line_no}
            if request.refused:
                replay["refused_by_api_server"] = True
            alert = build_alert(
                match,
                document,
                effect=effect,
                mode=mode,
                decision="denied" if denied else "allowed",
                extra={"replay": replay},
            )
            out.write(alert_line(alert) + "\n")


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


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))
