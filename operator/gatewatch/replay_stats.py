"""ES|QL STATS rules in ``gatewatch replay``: each on its schedule, as Elastic runs it.

A STATS rule aggregates over many events (``STATS ... BY user.name,
source.ip``), so admission, which sees one request, never evaluates it. Replay
feeds it every audit event it builds a document for, exempt namespaces and
requests authorization refused included (Elastic's rule sees them all), and
after reading the log runs the rule every ``schedule.interval`` over the last
``schedule.from`` (``gatewatch.esql.schedule``). Each row a run gives is one
result: a JSON alert (``gatewatch.esql`` holds the row's columns,
``gatewatch.replay.window`` the run's window) or a line of the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TextIO

from gatewatch.alerts import alert_line, build_alert
from gatewatch.decision import Mode
from gatewatch.engine import Match
from gatewatch.esql.schedule import ScheduledStats, StatsResult
from gatewatch.esql.values import Value, format_date, to_string
from gatewatch.rules.model import DEFAULT_SCHEDULE, Rule, RuleSet
from gatewatch.text_table import print_table


@dataclass
class StatsRules:
    """The enabled STATS rules of a rule set, each collecting the rows of its per-event commands."""

    runners: list[tuple[Rule, ScheduledStats]] = field(default_factory=list)

    @classmethod
    def of(cls, ruleset: RuleSet) -> StatsRules:
        runners = []
        for rule in ruleset.enabled_rules:
            if rule.aggregates:
                schedule = rule.schedule or DEFAULT_SCHEDULE
                runners.append((rule, ScheduledStats(rule.matcher, interval=schedule.interval,
                                                     lookback=schedule.lookback)))
        return cls(runners)

    def add(self, document: Mapping[str, Any]) -> None:
        for _, runner in self.runners:
            runner.add(document)

    def report(self, *, mode: Mode, output_format: str, out: TextIO) -> int:
        """Write every result (JSON alerts, or a table); returns how many there were."""
        found: list[tuple[Rule, StatsResult]] = [
            (rule, result) for rule, runner in self.runners for result in runner.results()
        ]
        if output_format == "json":
            for rule, result in found:
                out.write(alert_line(_alert(rule, result, mode=mode)) + "\n")
        elif self.runners:
            _print_results(found, out)
        return len(found)


def json_value(value: Value) -> Any:
    """An ES|QL value as JSON: dates and IPs as text, a multi-value as a list."""
    if isinstance(value, tuple):
        return [json_value(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return to_string(value)


def _alert(rule: Rule, result: StatsResult, *, mode: Mode) -> dict[str, Any]:
    document = {"event": {"dataset": "kubernetes.audit_logs"}}
    return build_alert(
        Match(rule=rule), document, mode=mode, now=result.end,
        extra={
            "esql": {name: json_value(value) for name, value in result.columns.items()},
            "replay": {"window": {"start": format_date(result.start), "end": format_date(result.end)},
                       "rows": result.rows_in_window},
        },
    )


def _print_results(found: Sequence[tuple[Rule, StatsResult]], out: TextIO) -> None:
    out.write("\nES|QL STATS results (replay only: each rule run on its schedule)\n")
    rows = [
        (format_date(result.end), rule.id, rule.name,
         ", ".join(f"{name}={_short(value)}" for name, value in result.columns.items()))
        for rule, result in found
    ]
    print_table(("RUN", "RULE ID", "RULE", "ROW"), rows, out)
    if not rows:
        out.write("(none)\n")


def _short(value: Value, limit: int = 60) -> str:
    text = str(json_value(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."
