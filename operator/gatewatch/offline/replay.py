"""`gatewatch replay`: an audit log through the rules, answering one of two questions.

- **What would the webhook have done?** (the default) One verdict per request:
  the events of one auditID (one per stage) give one verdict, from
  ResponseComplete, else the latest stage seen. Events the webhook never sees
  are skipped: exempt namespaces, and requests authorization refused.
- **What would Elastic's detection engine have alerted on?** (``every_event``)
  Every event is a document, evaluated on its own: every namespace, requests
  authorization refused included, every stage. One report per (auditID, rule)
  that any of the request's events matched.

Each line is read once. An event no rule can match is only skimmed
(gatewatch.offline.lines), and its rule-index answer comes from a memo
(gatewatch.offline.candidates); the others are parsed, checked once against
the input-shape policy (gatewatch.shapes: a field of the wrong type is set
aside with a warning), mapped and evaluated. The document of a match is kept
for its alert, never rebuilt.

``scan`` is one pass over a run of lines and returns everything the report
needs; ``run_replay`` reads the log in one pass, or in chunks on worker
processes (gatewatch.offline.parallel), and merges the passes in line order,
so the report is the same either way.
"""
from __future__ import annotations

import gc
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, TextIO

import click
import orjson
from msgspec import UNSET

from gatewatch.alerts import build_alert, encoded_audit
from gatewatch.decision import Mode, effect_of
from gatewatch.documents import DECISION_ANNOTATION, document_from_audit_event
from gatewatch.engine import Match, RuleEngine, event_time
from gatewatch.errors import InputError
from gatewatch.offline.candidates import CandidateMemo
from gatewatch.offline.lines import (SKIMMED_FIELDS, SKIMMED_STRUCTS, NotJson, SkimmedEvent, parse_line, skim_block,
                                     skim_line)
from gatewatch.offline.parallel import scan_log, split_lines
from gatewatch.offline.report import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    UNEXPECTED,
    LineWriter,
    ReplayStats,
    alert_bytes,
    effect_text,
    print_input_problems,
    print_replay_summary,
    summary_line,
    unexpected,
)
from gatewatch.replay_sequences import SequenceRules
from gatewatch.replay_stats import StatsRules
from gatewatch.rules.model import Action, RuleSet
from gatewatch.shapes import audit_event_view

# One request, several audit events (one per stage, same auditID): the verdict
# comes from ResponseComplete, else from the latest stage in this order.
STAGE_RANK = {"RequestReceived": 0, "ResponseStarted": 1, "Panic": 2, "ResponseComplete": 3}
UNKNOWN_STAGE_RANK = -1
_NOTHING: Mapping[str, Any] = {}


@dataclass(slots=True)
class Verdict:
    """One evaluated event: its query matches (empty: none) and what its report needs."""

    rank: int
    line_no: int
    matches: list[Match]
    refused: bool = False  # the API server answered >= 400: refused whatever gatewatch did
    at: datetime | None = None
    document: dict[str, Any] | None = None
    namespace: str = "-"
    user: str = "-"
    audit_id: str | None = None
    # JSON reports: the event's audit part of its alerts (alerts.encoded_audit), made while the event is
    # fresh in the CPU's cache and once for all its alerts. None: each alert builds its own.
    encoded_audit: bytes | None = None


@dataclass
class ScanResult:
    """A pass over some lines: counts, the matching events, and (requests) the stages that settled without a match."""

    stats: ReplayStats = field(default_factory=ReplayStats)
    matched: list[Verdict] = field(default_factory=list)  # in line order
    # Request mode: per auditID, the highest stage rank seen without a match, and the line that wrote it.
    settled: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayOptions:
    output_format: str
    mode: Mode
    every_event: bool = False
    exempt_namespaces: frozenset[str] = frozenset()


class Scanner:
    """Reads lines into verdicts; one per process (its memo and engine are reused across chunks)."""

    def __init__(self, ruleset: RuleSet, options: ReplayOptions) -> None:
        # No gc.collect and gc.freeze of the rule set: the run keeps the collector off (_collector_paused).
        self.engine = RuleEngine(ruleset, settle_heap=False)
        self.options = options
        self.memo = CandidateMemo(self.engine.may_match_audit_event, known=SKIMMED_FIELDS,
                                  structs=SKIMMED_STRUCTS)
        self.stats_rules = StatsRules.of(ruleset)  # ES|QL STATS rules: fed documents, run on their schedule at the end
        self.sequence_rules = SequenceRules.of(ruleset)  # EQL sequences: fed documents, matched in event time at the end
        # Rules that span many events (STATS, sequences) want documents beyond the webhook's.
        self.feeding = bool(self.stats_rules.runners or self.sequence_rules.runners)

    def scan(self, first_line_no: int, block: bytes) -> ScanResult:
        """One pass over a block of whole lines, the first of them numbered ``first_line_no``."""
        result = ScanResult()
        stats, matched, settled = result.stats, result.matched, result.settled
        every_event = self.options.every_event
        exempt = () if every_event else self.options.exempt_namespaces
        memo = self.memo
        feeding = self.feeding
        # Looked up per pass: tests take the skims away.
        skimmed_block = skim_block(block)
        if skimmed_block is None:  # skimmed line by line (None: only a full parse can judge the line)
            lines = split_lines(block)
            skims: list[SkimmedEvent | None] = [skim_line(raw) for raw in lines]
            line_at = lines.__getitem__
        else:  # skimmed at once; a line's bytes are cut out only for the few that go further
            skims, ends = skimmed_block  # type: ignore[assignment]

            def line_at(index: int) -> bytes:
                return block[ends[index - 1] + 1 if index else 0:ends[index]]
        tracked: set[str] = set()  # auditIDs of this pass whose events were evaluated
        # Counted here and added at the end: this loop runs for every line, most of them skimmed only.
        unskimmed = exempted_count = forbidden_count = 0
        for index, skim in enumerate(skims):
            if skim is None or skim.verb is UNSET:  # a blank line, or one only a full parse can judge
                unskimmed += 1
                raw = line_at(index)
                if not raw or raw.isspace():
                    continue
                verdict = self._evaluate(raw, first_line_no + index, stats, counted=False)
            else:
                exempted = forbidden = False
                if exempt:
                    object_ref = skim.objectRef
                    exempted = object_ref is not UNSET and object_ref.namespace in exempt
                if not every_event and not exempted:
                    annotations = skim.annotations  # only the decision: not the event's annotations
                    forbidden = annotations is not UNSET and annotations.decision == "forbid"
                # ES|QL STATS and EQL sequence rules see every event a rule could match, exempt and refused ones included.
                candidate = memo.may_match(skim) if feeding or not (exempted or forbidden) else False
                if candidate is False or (not feeding and (exempted or forbidden)):
                    if exempted:
                        exempted_count += 1
                        continue
                    forbidden_count += forbidden
                    # A later stage without a match may decide a request that matched earlier
                    # (authorization refused it: always recorded, as a block cannot know).
                    if not every_event and (forbidden or tracked):
                        audit_id = skim.auditID
                        if audit_id is not UNSET and (forbidden or audit_id in tracked):
                            _settle(settled, audit_id, STAGE_RANK.get(skim.stage, UNKNOWN_STAGE_RANK),
                                    first_line_no + index)
                    continue
                # The index answered on the skim's fields alone (None: it needs the whole event, which is then
                # read field by field). The stage and decision may still rule every rule out.
                raw = line_at(index)
                if candidate and not self._may_match_at_stage(skim, raw):  # a RequestReceived: no decision yet
                    # Recorded as its evaluation would: a stage without a match.
                    audit_id = skim.auditID
                    if not every_event and not exempted and audit_id is not UNSET:
                        tracked.add(audit_id)
                        _settle(settled, audit_id, STAGE_RANK.get(skim.stage, UNKNOWN_STAGE_RANK),
                                first_line_no + index)
                    continue
                # The index said yes (or needs the whole event: None) on the skim's fields.
                verdict = self._evaluate(raw, first_line_no + index, stats, counted=True, candidate=candidate or None)
            if verdict is None:
                continue
            if verdict.audit_id is not None and not every_event:
                tracked.add(verdict.audit_id)
            if verdict.matches:
                matched.append(verdict)
            elif verdict.audit_id is not None and not every_event:
                _settle(settled, verdict.audit_id, verdict.rank, verdict.line_no)
        stats.lines += len(skims)
        stats.events += len(skims) - unskimmed
        stats.exempt += exempted_count
        stats.refused_by_authorization += forbidden_count
        return result

    def _may_match_at_stage(self, skim: SkimmedEvent, raw: bytes) -> bool:
        """False when the event's stage and authorization decision leave no rule possible (the rule index's
        ``may_match_at_stage``), and the line can hold no other spelling of the decision."""
        annotations = skim.annotations
        decision = None if annotations is UNSET or annotations.decision is UNSET else annotations.decision
        if self.engine.may_match_at_stage(None if skim.stage is UNSET else skim.stage, decision):
            return True
        # The document's key has underscores for the dots, so other keys (authorization_k8s_io/decision, a
        # dotted key, one with a letter of "decision" escaped: \u0061-\u007a) could give it a value the skim
        # does not hold: then the line is evaluated whole. (Go's encoder escapes only <, > and &.)
        return raw.count(b"decision") != (decision is not None) or b"\\u006" in raw or b"\\u007" in raw

    def _evaluate(self, raw: bytes, line_no: int, stats: ReplayStats, *, counted: bool,
                  candidate: bool | None = None) -> Verdict | None:
        """The full path: parse, check once, map, evaluate. None: nothing to record.

        ``candidate``: the rule index's answer, when the skim had it (the skim holds the fields it read as they are).
        """
        try:
            view = audit_event_view(parse_line(raw))
        except NotJson as error:
            stats.malformed_line(line_no, f"not JSON: {error}")
            return None
        except InputError as error:
            stats.malformed_line(line_no, error.reason)
            return None
        except UNEXPECTED as error:
            stats.malformed_line(line_no, unexpected(error))
            return None
        event = view.event
        if not counted:
            stats.events += 1
        if view.warnings:
            stats.field_warnings(line_no, view.warnings)
        object_ref = event.get("objectRef") or _NOTHING
        options = self.options
        exempted = forbidden = False
        if not options.every_event:
            exempted = bool(options.exempt_namespaces) and object_ref.get("namespace") in options.exempt_namespaces
            # Authorization refused it: the webhook never sees such a request.
            forbidden = not exempted and (event.get("annotations") or _NOTHING).get(DECISION_ANNOTATION) == "forbid"
            if exempted:
                stats.exempt += 1
            elif forbidden:
                stats.refused_by_authorization += 1
        if candidate is None:
            candidate = self.engine.may_match_audit_event(event)
        feeding = candidate and self.feeding
        if exempted and not feeding:
            return None
        if (forbidden or not candidate) and not feeding:
            return self._unmatched(event, line_no)
        try:
            document = document_from_audit_event(event, checked=True, pod_fields=self.engine.reads_pod_fields)
            if feeding:  # ES|QL STATS and EQL sequence rules see exempt and refused events too
                self.stats_rules.add(document)
                self.sequence_rules.add(document, line=line_no)
            if exempted:
                return None
            if forbidden:
                return self._unmatched(event, line_no)
            matches = self.engine.evaluate(document, new_terms=False)
        except UNEXPECTED as error:
            stats.events -= 1  # counted before it turned out unusable
            stats.malformed_line(line_no, unexpected(error))
            return None
        verdict = self._unmatched(event, line_no)
        if matches:
            code = (event.get("responseStatus") or _NOTHING).get("code")
            verdict.matches = matches
            verdict.refused = code is not None and code >= 400
            verdict.at = event_time(document)
            verdict.document = document
            if options.output_format == "json":
                verdict.encoded_audit = encoded_audit(document)
            verdict.namespace = object_ref.get("namespace") or "-"
            verdict.user = (event.get("user") or _NOTHING).get("username") or "-"
        return verdict

    def _unmatched(self, event: Mapping[str, Any], line_no: int) -> Verdict:
        return Verdict(
            rank=STAGE_RANK.get(event.get("stage"), UNKNOWN_STAGE_RANK),
            line_no=line_no,
            matches=[],
            audit_id=event.get("auditID") or None,
        )


def _settle(settled: dict[str, tuple[int, int]], audit_id: str, rank: int, line_no: int) -> None:
    previous = settled.get(audit_id)
    if previous is None or rank >= previous[0]:
        settled[audit_id] = (rank, line_no)


# --- one run ------------------------------------------------------------------------------


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
    every_event: bool = False,
    workers: int | None = 1,
) -> int:
    """Replay audit-log lines; returns the exit code (2 only when the input cannot be read).

    ``workers``: processes to scan with (None: as many as the machine has
    cores, for inputs large enough to gain from it); the report is the same
    for any number.
    """
    options = ReplayOptions(output_format=output_format, mode=mode, every_event=every_event,
                            exempt_namespaces=frozenset() if every_event else exempt_namespaces)
    scanner = Scanner(ruleset, options)
    if scanner.feeding:
        workers = 1  # an ES|QL STATS or EQL sequence rule spans the whole log, in one process
    rules = {rule.id: rule for rule in scanner.engine.ruleset.rules}
    with _collector_paused():
        try:
            result = merge(scan_log(scanner.scan, source, lines_in=lambda r: r.stats.lines, workers=workers,
                                    progress=progress, err=err,
                                    to_parent=matches_by_rule_id,
                                    from_worker=lambda r: matches_from_rule_ids(r, rules)))
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            click.echo(f"gatewatch: cannot read {source}: {error}", err=True, file=err)
            return EXIT_BAD_INPUT
        report = _report_every_event if every_event else _report_requests
        report(scanner.engine, result, options=options, out=out)
        stats = result.stats
        if output_format == "table":
            heading = "every event, as Elastic's detection engine" if every_event else f"{mode.value} mode"
            print_replay_summary(stats, heading, out)
        stats_results = scanner.stats_rules.report(mode=mode, output_format=output_format, out=out)
        sequences = scanner.sequence_rules.report(mode=mode, output_format=output_format, out=out)
        summary = summary_line(stats, mode=mode, every_event=every_event)
        if scanner.stats_rules.runners:
            summary += f", {stats_results} ES|QL STATS result(s) from {len(scanner.stats_rules.runners)} rule(s)"
        summary += scanner.sequence_rules.summary(sequences)
        # Freed while the collector is paused: re-enabled, its first pass would scan every object the run
        # kept (the documents of the matches: a tenth of the run's time).
        del result, scanner
    print_input_problems(stats, source, err)
    click.echo(summary, err=True, file=err)
    return EXIT_OK


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector off for a replay: the pass allocates a few objects per line and keeps only
    trees (documents, verdicts), no cycles for it to find, and its scans of what is kept were replay's
    largest cost."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def merge(results: Iterable[ScanResult]) -> ScanResult:
    """Blocks' results, in line order, as one pass over the whole log would have made them."""
    merged = ScanResult()
    for result in results:
        merged.stats.merge(result.stats)
        merged.matched.extend(result.matched)
        for audit_id, stage in result.settled.items():
            previous = merged.settled.get(audit_id)
            if previous is None or stage >= previous:  # (rank, line): the highest stage, then the later line
                merged.settled[audit_id] = stage
    return merged


def matches_by_rule_id(result: ScanResult) -> ScanResult:
    """A worker's result made picklable: rules hold compiled queries (closures), so matches travel by rule id."""
    for verdict in result.matched:
        verdict.matches = [(match.rule.id, match.new_terms_key) for match in verdict.matches]  # type: ignore[misc]
    return result


def matches_from_rule_ids(result: ScanResult, rules: Mapping[str, Any]) -> ScanResult:
    for verdict in result.matched:
        verdict.matches = [Match(rule=rules[rule_id], new_terms_key=key) for rule_id, key in verdict.matches]  # type: ignore[misc]
    return result


def _decisive(result: ScanResult) -> list[Verdict]:
    """Request mode: per request the verdict of its highest stage (a tie: the later line), in event-time order."""
    by_audit_id: dict[str, Verdict] = {}
    requests: list[Verdict] = []
    for verdict in result.matched:
        if verdict.audit_id is None:
            requests.append(verdict)  # an event without auditID is a request of its own
            continue
        previous = by_audit_id.get(verdict.audit_id)
        if previous is None or verdict.rank >= previous.rank:
            by_audit_id[verdict.audit_id] = verdict
    for audit_id, verdict in by_audit_id.items():
        settled = result.settled.get(audit_id)
        # A later stage without a match decides (rotated logs concatenated newest first included).
        if settled is not None and (settled[0] > verdict.rank or (settled[0] == verdict.rank and settled[1] > verdict.line_no)):
            continue
        requests.append(verdict)
    requests.sort(key=lambda v: (v.at, v.line_no))
    return requests


def _report_requests(engine: RuleEngine, result: ScanResult, *, options: ReplayOptions, out: TextIO) -> None:
    stats, mode = result.stats, options.mode
    writer = LineWriter(out) if options.output_format == "json" else None
    # Each rule's effect in this run's mode, and its key in the counts, once per rule (not per match).
    effects: dict[str, tuple[Action | None, tuple[str, str, str]]] = {}
    # new_terms history needs event-time order: decided after the streaming pass.
    for request in _decisive(result):
        assert request.at is not None and request.document is not None
        matches = engine.apply_new_terms(request.matches, at=request.at)
        if not matches:
            continue
        of_matches = []
        for match in matches:
            rule = match.rule
            of_rule = effects.get(rule.id)
            if of_rule is None:
                effect = effect_of(rule.action, mode)
                of_rule = effects[rule.id] = (effect, (rule.id, rule.name, effect_text(effect)))
            of_matches.append(of_rule)
        # What decide(matches, mode=mode).allowed says (a request is denied when a match's effect is deny),
        # without the warnings and message it writes for a review.
        denied = any(effect is Action.DENY for effect, _ in of_matches)
        stats.matched_requests += 1
        if denied:
            stats.denied_requests += 1
            stats.denied_but_refused += request.refused
        for match, (effect, counted) in zip(matches, of_matches):
            stats.matches += 1
            stats.by_rule[counted] += 1
            stats.by_namespace[request.namespace] += 1
            stats.by_user[request.user] += 1
            if writer is not None:
                replay: dict[str, Any] = {"line": request.line_no}
                if request.audit_id is not None:
                    replay["audit_id"] = request.audit_id
                if request.refused:
                    replay["refused_by_api_server"] = True
                writer.write(_alert_line(match, request, effect=effect, mode=mode,
                                         decision="denied" if denied else "allowed", extra={"replay": replay}))
    if writer is not None:
        writer.flush()


def _report_every_event(engine: RuleEngine, result: ScanResult, *, options: ReplayOptions, out: TextIO) -> None:
    """One report per (auditID, rule) that any event of the request matched, as Elastic alerts.

    new_terms rules are applied per event in event-time order, as Elastic's
    rule runs them; a pair is reported once, from its first matching event,
    with every line that matched.
    """
    stats = result.stats
    writer = LineWriter(out) if options.output_format == "json" else None
    pairs: dict[tuple[str, str], tuple[Verdict, Match, list[int]]] = {}
    for verdict in sorted(result.matched, key=lambda v: (v.at, v.line_no)):
        assert verdict.at is not None
        request = verdict.audit_id if verdict.audit_id is not None else f"line {verdict.line_no}"
        for match in engine.apply_new_terms(verdict.matches, at=verdict.at):
            pair = pairs.get((request, match.rule.id))
            if pair is None:
                pairs[(request, match.rule.id)] = (verdict, match, [verdict.line_no])
            else:
                pair[2].append(verdict.line_no)
    for verdict, match, lines in pairs.values():
        assert verdict.document is not None
        stats.matches += 1
        stats.by_rule[(match.rule.id, match.rule.name, "alert")] += 1
        stats.by_namespace[verdict.namespace] += 1
        stats.by_user[verdict.user] += 1
        if writer is not None:
            replay: dict[str, Any] = {"line": verdict.line_no, "lines": sorted(lines), "every_event": True}
            if verdict.audit_id is not None:
                replay["audit_id"] = verdict.audit_id
            if verdict.refused:
                replay["refused_by_api_server"] = True
            writer.write(_alert_line(match, verdict, extra={"replay": replay}))
    if writer is not None:
        writer.flush()


def _alert_line(match: Match, verdict: Verdict, **fields: Any) -> bytes:
    """The alert of one match of ``verdict``'s event as a JSON line: its audit part spliced in as encoded once
    for the event; the whole alert built and written as report.alert_bytes does when orjson refuses a part."""
    if verdict.encoded_audit is not None:
        spliced = orjson.Fragment(verdict.encoded_audit)
        alert = build_alert(match, verdict.document or {}, spliced_audit=spliced, **fields)
        try:
            return orjson.dumps(alert, default=str, option=orjson.OPT_APPEND_NEWLINE)
        except (TypeError, orjson.JSONEncodeError):
            pass  # another part orjson cannot write: the alert as a whole the stdlib's way
    return alert_bytes(build_alert(match, verdict.document or {}, **fields))
