"""EQL sequence rules in ``gatewatch replay``: ordered steps over event time.

A sequence spans many events (a role changed, then a workload by the same
user within five minutes), so admission, which sees one request, never
evaluates it. Replay feeds it every audit event it builds a document for,
exempt namespaces and requests authorization refused included (Elastic's rule
sees them all), as it does ES|QL STATS rules (gatewatch.replay_stats). Each
document is observed as it comes (``gatewatch.sequences``: which steps it
matches, its join keys); a document one of the rule's exceptions matches
takes no part, as Elastic's exceptions filter the events the EQL search
reads. After the log is read, the observations are matched in event time
order (a tie: line order), so a log whose lines are out of time order (two
API servers, rotated files) gives the same sequences. Each completed sequence
is one result: a JSON alert (the last event's, with every event under
``gatewatch.sequence.events``) or a line of the table.

Memory: the documents that match a step (or ``until``) of a sequence rule are
kept until the end of the log (role and workload changes, not the reads that
make up most logs), and at most ``max_pending`` partial sequences per rule
while matching.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence, TextIO

from gatewatch.alerts import alert_event, alert_line, build_alert
from gatewatch.decision import Mode
from gatewatch.engine import Match
from gatewatch.newterms import parse_iso_time
from gatewatch.rules.model import Rule, RuleSet
from gatewatch.sequences import DEFAULT_MAX_PENDING, CompiledSequence, Completed, Observation, match_sequences
from gatewatch.text_table import print_table


@dataclass(frozen=True, slots=True)
class SequenceEvent:
    """One event a step matched: its line in the log and its document."""

    line: int
    document: Mapping[str, Any]


@dataclass
class _Runner:
    rule: Rule
    observations: list[Observation] = field(default_factory=list)
    undated: int = 0


@dataclass
class SequenceRules:
    """The enabled EQL sequence rules of a rule set, each collecting what it observed."""

    runners: list[_Runner] = field(default_factory=list)
    max_pending: int = DEFAULT_MAX_PENDING
    evicted: int = 0

    @classmethod
    def of(cls, ruleset: RuleSet, *, max_pending: int = DEFAULT_MAX_PENDING) -> SequenceRules:
        return cls([_Runner(rule) for rule in ruleset.enabled_rules if rule.sequence], max_pending=max_pending)

    def add(self, document: Mapping[str, Any], *, line: int) -> None:
        at = _timestamp(document)
        for runner in self.runners:
            sequence: CompiledSequence = runner.rule.matcher  # type: ignore[assignment]
            if runner.rule.is_excepted(document):
                continue
            if at is None:
                runner.undated += any(step(document) for step in sequence.steps)
                continue
            observation = sequence.observe(document, at=at, item=SequenceEvent(line, document))
            if observation is not None:
                runner.observations.append(observation)

    def results(self) -> list[tuple[Rule, Completed]]:
        """Every completed sequence, rule by rule, each rule's in the order they completed."""
        found: list[tuple[Rule, Completed]] = []
        for runner in self.runners:
            completed, matcher = match_sequences(runner.rule.matcher, runner.observations,  # type: ignore[arg-type]
                                                 max_pending=self.max_pending)
            self.evicted += matcher.evicted
            found.extend((runner.rule, done) for done in completed)
        return found

    def report(self, *, mode: Mode, output_format: str, out: TextIO) -> int:
        """Write every sequence (JSON alerts, or a table); returns how many there were."""
        found = self.results()
        if output_format == "json":
            for rule, done in found:
                out.write(alert_line(sequence_alert(rule, done, mode=mode)) + "\n")
        elif self.runners:
            _print_results(found, out)
        return len(found)

    def summary(self, count: int) -> str:
        """The part of replay's summary line about sequences ("" without sequence rules)."""
        if not self.runners:
            return ""
        text = f", {count} EQL sequence(s) from {len(self.runners)} rule(s)"
        if self.evicted:
            text += (f" ({self.evicted} partial sequence(s) evicted at the limit of {self.max_pending} per rule: "
                     "some sequences may be missing)")
        undated = sum(runner.undated for runner in self.runners)
        if undated:
            text += f" ({undated} event(s) without @timestamp left out of sequences)"
        return text


def sequence_alert(rule: Rule, done: Completed, *, mode: Mode) -> dict[str, Any]:
    """The alert of a completed sequence: the last event's, with every event and the join key."""
    events: list[SequenceEvent] = list(done.items)
    last = events[-1]
    sequence: CompiledSequence = rule.matcher  # type: ignore[assignment]
    key_fields = sequence.keys[-1]
    described = [alert_event(event.document, extra={"replay": {"line": event.line}}) for event in events]
    alert = build_alert(
        Match(rule=rule), last.document, mode=mode, now=_timestamp(last.document),
        extra={
            "sequence": {"join_key": dict(zip(key_fields, done.key)) or None, "events": described},
            "replay": {"line": last.line, "lines": [event.line for event in events]},
        },
    )
    alert["message"] = f"{rule.name}: " + ", then ".join(event["message"] for event in described)
    return alert


def _timestamp(document: Mapping[str, Any]) -> datetime | None:
    return parse_iso_time(document.get("@timestamp"))


def _print_results(found: Sequence[tuple[Rule, Completed]], out: TextIO) -> None:
    out.write("\nEQL sequences (replay only: ordered events over event time)\n")
    rows = []
    for rule, done in found:
        events: list[SequenceEvent] = list(done.items)
        key = ", ".join(str(value) for value in done.key) or "-"
        rows.append((str(events[-1].document.get("@timestamp")), rule.id, rule.name, key,
                     ", ".join(str(event.line) for event in events)))
    print_table(("LAST EVENT", "RULE ID", "RULE", "BY", "LINES"), rows, out)
    if not rows:
        out.write("(none)\n")
