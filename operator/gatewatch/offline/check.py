"""`gatewatch check`: manifests and AdmissionReviews on disk, evaluated as the admission controller would.

Goes through the operator's path: input -> document -> engine -> decision ->
ECS alert. Input is untrusted: an object with a field of the wrong type is
reported (file, line, field; gatewatch.shapes' strict policy, as at
admission) and the run carries on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import click

from gatewatch.alerts import build_alert
from gatewatch.decision import Mode, decide, effect_of
from gatewatch.engine import Match, RuleEngine
from gatewatch.errors import GatewatchError, InputError
from gatewatch.offline.report import (
    EXIT_BAD_INPUT,
    EXIT_FINDINGS,
    EXIT_OK,
    UNEXPECTED,
    LineWriter,
    alert_bytes,
    effect_text,
    text,
    unexpected,
)
from gatewatch.rules.model import Action, RuleSet
from gatewatch.rules.packs import control_tags


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
                    document = document_from_item(item)
                    found = _check_document(engine, document, item, mode=mode)
                except GatewatchError as error:
                    click.echo(f"gatewatch: {error}", err=True, file=err)
                    bad_input = True
                    continue
                except UNEXPECTED as error:
                    click.echo(f"gatewatch: {item.location}: {unexpected(error)}", err=True, file=err)
                    bad_input = True
                    continue
                checked += 1
                findings.extend(found)
        except InputError as error:
            click.echo(f"gatewatch: {error}", err=True, file=err)
            bad_input = True

    if output_format == "json":
        writer = LineWriter(out)
        for finding in findings:
            writer.write(alert_bytes(finding.alert))
        writer.flush()
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
                f"  {effect_text(finding.effect).upper():<5}  [{techniques}] {rule.name}{marker}"
                f"  severity={text(rule.severity)} id={rule.id}\n"
            )
            detail = " ".join(control_tags(rule))
            fields = finding.alert.get("gatewatch", {}).get("offending_fields") or []
            if fields:
                detail += (" at " if detail else "at ") + ", ".join(fields)
            if detail:
                out.write(f"         {detail}\n")
    out.write(f"(effects as in {mode.value} mode; a rule's action caps what it can do)\n")
