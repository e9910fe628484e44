"""The `gatewatch` command: offline checks, audit-log replay, rule tools, and the operator.

Exit codes: 0 nothing reached --fail-on; 1 something did (check) or a rule
failed to import/lint; 2 bad input or usage.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import click

from gatewatch import __version__
from gatewatch.decision import Mode
from gatewatch.errors import ExportRuleError, GatewatchError
from gatewatch.rules.model import Action, RuleSet

# The webhook's namespaceSelector always leaves these out (gatewatch's own
# namespace by its default name).
DEFAULT_EXEMPT_NAMESPACES = ("kube-system", "gatewatch")
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2

_ACTION_CHOICE = click.Choice([action.value for action in Action])
_MODE_CHOICE = click.Choice([mode.value for mode in Mode])
_FORMAT_CHOICE = click.Choice(["table", "json"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gatewatch")
def main() -> None:
    """gatewatch: Elastic KQL detection rules, enforced at Kubernetes admission."""


def _rules_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--rules",
        "rules_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Rule file(s); repeat to add more. Default: the rules.yaml shipped with gatewatch.",
    )(_allow_empty_option(func))


def _allow_empty_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--allow-empty-rules",
        is_flag=True,
        help="Accept rule files without an enabled rule (refused by default: nothing would be evaluated).",
    )(func)


def _pack_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--pack",
        "packs",
        multiple=True,
        metavar="NAME[=ACTION]",
        help="Add a rule pack shipped with gatewatch (see `gatewatch rules packs`), beside the rules; "
        "repeat to add more. =ACTION (alert, warn, deny) sets the action of every rule of the pack.",
    )(func)


def load_ruleset_or_exit(
    rules_files: Sequence[Path], packs: Sequence[str] = (), *, allow_empty: bool = False
) -> RuleSet:
    """The rule files (default: the shipped rules.yaml) and the ``--pack`` packs; exit 2 on an error."""
    from gatewatch.rules.packs import PackSelection, load_ruleset

    try:
        return load_ruleset(
            list(rules_files), packs=[PackSelection.parse(text) for text in packs], allow_empty=allow_empty
        )
    except (GatewatchError, OSError) as error:
        click.echo(f"gatewatch: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@_rules_option
@_pack_option
@click.option("--format", "output_format", type=_FORMAT_CHOICE, default="table", show_default=True)
@click.option(
    "--fail-on",
    type=_ACTION_CHOICE,
    default="deny",
    show_default=True,
    help="Exit 1 when a matching rule's action is at least this.",
)
@click.option(
    "--mode",
    type=_MODE_CHOICE,
    default="enforce",
    show_default=True,
    help="Namespace mode to simulate for the effect column (off: every match listed with effect none). "
    "It never changes the exit status.",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True, path_type=Path))
def check(
    rules_files: tuple[Path, ...],
    allow_empty_rules: bool,
    packs: tuple[str, ...],
    output_format: str,
    fail_on: str,
    mode: str,
    paths: tuple[Path, ...],
) -> None:
    """Check manifests and AdmissionReview files against the rules (no cluster needed).

    PATHS are files, directories (walked for .yaml, .yml, .json) or - for
    stdin (read as YAML). An AdmissionReview, or a bare AdmissionRequest (as
    kwctl test data write it), is evaluated as the request it is. Workloads (Deployment, StatefulSet, DaemonSet,
    ReplicaSet, Job, CronJob) count as the Pods their templates create.
    Every query match is reported, new_terms rules included (marked: history
    is not consulted offline). A Pod Security match names its control and
    the offending fields (spec.initContainers[0].securityContext.privileged).

    \b
    Exit status, the same in every --mode (off included, so a CI gate
    cannot be switched off by the mode it simulates):
      0  no matching rule's action reaches --fail-on
      1  one does
      2  bad usage, or an input that could not be read or evaluated (named
         on stderr with its file and line; the other inputs are still checked)
    """
    from gatewatch.offline import run_check

    ruleset = load_ruleset_or_exit(rules_files, packs, allow_empty=allow_empty_rules)
    sys.exit(
        run_check(
            ruleset,
            paths,
            output_format=output_format,
            fail_on=Action(fail_on),
            mode=Mode(mode),
            out=sys.stdout,
            err=sys.stderr,
        )
    )


@main.command()
@_rules_option
@_pack_option
@click.option("--format", "output_format", type=_FORMAT_CHOICE, default="table", show_default=True)
@click.option(
    "--mode",
    type=_MODE_CHOICE,
    default="enforce",
    show_default=True,
    help="Namespace mode to simulate: what would this mode have done?",
)
@click.option(
    "--exempt-namespace",
    "exempt_namespaces",
    multiple=True,
    default=DEFAULT_EXEMPT_NAMESPACES,
    show_default=True,
    help="Namespaces the webhook never sees (as in the cluster); repeat. Use --all-namespaces to evaluate all.",
)
@click.option("--all-namespaces", is_flag=True, help="Evaluate events of exempt namespaces too.")
@click.option(
    "--every-event",
    is_flag=True,
    help="Answer \"what would Elastic's detection engine have alerted on?\": every event evaluated on its own "
    "(every namespace, requests authorization refused included, every stage), one report per (auditID, rule).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to scan the log with (default: every core for a file of 32 MiB or more, else 1; "
    "one with ES|QL STATS or EQL sequence rules, which span the whole log). The report is the same for any number.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when it is a terminal).")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
def replay(
    rules_files: tuple[Path, ...],
    allow_empty_rules: bool,
    packs: tuple[str, ...],
    output_format: str,
    mode: str,
    exempt_namespaces: tuple[str, ...],
    all_namespaces: bool,
    every_event: bool,
    workers: int | None,
    progress: bool | None,
    source: str,
) -> None:
    """Replay audit-log JSON lines (plain or .gz, or - for stdin) through the rules.

    It answers one of two questions.

    \b
    By default: "what would the webhook in this --mode have done?"
    One verdict per request, not per audit event: the API server writes
    one event per stage of a request (RequestReceived, ResponseStarted,
    ResponseComplete, Panic), all with the same auditID, and they give one
    verdict, taken from ResponseComplete, else from the latest stage seen
    (an event without auditID is a request of its own). Skipped, as the
    webhook would never see them:
      - events in exempt namespaces (the webhook's namespaceSelector);
      - events authorization refused (decision forbid): admission runs
        after authorization.
    A request the API server refused later (response code >= 400, e.g.
    another admission plugin) is still evaluated; the summary says how many
    of the requests this mode would have denied were refused anyway.

    \b
    With --every-event: "what would Elastic's detection engine have
    alerted on?" Every event is evaluated on its own, as Elastic evaluates
    each audit document: every namespace, requests authorization refused
    included, every stage. One report per (auditID, rule) that any event of
    the request matched (alerts carry every matching line); no mode, no
    decision.

    ES|QL rules with STATS (replay only) aggregate over many events: each runs
    after the log is read, as Elastic schedules it (every schedule.interval
    over the last schedule.from), on every event, exempt namespaces and
    refused requests included; each result row is reported after the requests.
    EQL sequence rules (replay only) are matched the same way, over event
    time (@timestamp) after the log is read; each sequence is reported after
    the requests, with every event of it.

    Memory grows with the matching requests, not with the log. new_terms
    rules are applied in event-time order. Malformed lines (not JSON, not
    an audit event) are counted and reported with their line numbers; a
    field of the wrong type is ignored for matching, as Elasticsearch would
    index the event, and reported as a warning. Never fatal. Exit status 0,
    or 2 when SOURCE cannot be read.
    """
    from gatewatch.offline import run_replay

    ruleset = load_ruleset_or_exit(rules_files, packs, allow_empty=allow_empty_rules)
    if progress is None:
        progress = sys.stderr.isatty()
    sys.exit(
        run_replay(
            ruleset,
            source,
            output_format=output_format,
            mode=Mode(mode),
            exempt_namespaces=frozenset() if all_namespaces else frozenset(exempt_namespaces),
            every_event=every_event,
            workers=workers,
            progress=progress,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


@main.group()
def rules() -> None:
    """Rule tools: lint, list the rule packs, import and export Elastic rules."""


@rules.command("packs")
def rules_packs() -> None:
    """List the rule packs shipped with gatewatch (add one with --pack NAME, or the chart's rules.packs)."""
    from gatewatch.rules.packs import available_packs

    try:
        packs = available_packs()
    except GatewatchError as error:
        click.echo(f"gatewatch: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    width = max((len(pack.name) for pack in packs), default=4)
    click.echo(f"{'NAME':<{width}}  RULES  DESCRIPTION")
    for pack in packs:
        click.echo(f"{pack.name:<{width}}  {pack.rule_count:>5}  {pack.description or ''}")


@rules.command("lint")
@_allow_empty_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rules_lint(allow_empty_rules: bool, files: tuple[Path, ...]) -> None:
    """Load and lint rule files (default: the shipped rules.yaml).

    Says which fields a rule cannot use at admission (admission requests carry
    no source.ip or user agent) and what new_terms rules key on there instead.
    """
    from gatewatch.rules.lint import format_findings, has_errors, lint_ruleset

    ruleset = load_ruleset_or_exit(files, allow_empty=allow_empty_rules)
    findings = lint_ruleset(ruleset)
    click.echo(format_findings(findings))
    click.echo(f"{len(ruleset.rules)} rule(s) loaded, {len(findings)} finding(s)", err=True)
    sys.exit(EXIT_FINDINGS if has_errors(findings) else 0)


@rules.command("import-elastic")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write rules.yaml here (default: stdout).")
@click.option(
    "--keep-action", is_flag=True,
    help="Keep the action a gatewatch export recorded (meta.gatewatch.action) instead of alert.",
)
def rules_import_elastic(files: tuple[Path, ...], output: Path | None, keep_action: bool) -> None:
    """Convert Elastic detection rules (TOML files, or Kibana's rule export NDJSON) to gatewatch rules.yaml.

    Converts every file it can; names each file it cannot on stderr
    (FILE: reason) and exits 1 if any failed. Odd but harmless metadata
    (an ATT&CK id Elastic wrote in the wrong slot, a revoked id, a wrong
    reference URL) is fixed where certain and is a warning
    (FILE: warning: ...): it never fails a rule. Imported rules get action
    `alert`: raise it by hand once you trust them.
    """
    from gatewatch.rules.elastic_import import import_elastic_rules

    result = import_elastic_rules(list(files), keep_action=keep_action)
    for path, reason in result.failures:
        click.echo(f"{path}: {reason}", err=True)
    for path, warning in result.warnings:
        click.echo(f"{path}: warning: {warning}", err=True)
    if result.rules_yaml:
        if output is None:
            click.echo(result.rules_yaml, nl=False)
        else:
            output.write_text(result.rules_yaml, encoding="utf-8")
            click.echo(f"wrote {output}", err=True)
    sys.exit(EXIT_FINDINGS if result.failures else 0)


@rules.command("export-elastic")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_pack_option
@click.option(
    "--format", "export_format", type=click.Choice(["ndjson", "toml"]), default="ndjson", show_default=True,
    help="ndjson: Kibana's rule import file (one rule a line); toml: Elastic detection-rules files, one a rule.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path),
    help="ndjson: the file to write (default: stdout). toml: the directory to write the files into (required).",
)
def rules_export_elastic(files: tuple[Path, ...], packs: tuple[str, ...], export_format: str, output: Path | None) -> None:
    """Write gatewatch rules (default: the shipped rules.yaml; --pack adds packs) as Elastic detection rules.

    Elastic then alerts where gatewatch would: a KQL rule's exceptions are
    folded into its query. Elastic has no action (alert/warn/deny): it and the
    rule's own id, query and exceptions are kept in meta.gatewatch, so
    `gatewatch rules import-elastic` gives the same rules back. Import the
    NDJSON in Kibana (Security > Rules > Import, or
    POST /api/detection_engine/rules/_import). A rule Elastic has no form for
    (a new_terms rule over EQL) is named on stderr and the command exits 1.
    """
    from datetime import date

    from gatewatch.rules.elastic_export import export_rule, to_ndjson, to_toml, toml_file_names

    ruleset = load_ruleset_or_exit(files, packs)
    exported, failed = [], False
    for rule in ruleset.rules:
        try:
            result = export_rule(rule, today=date.today())
        except ExportRuleError as error:
            click.echo(f"{error}: not exported", err=True)
            failed = True
            continue
        exported.append(result)
        for warning in result.warnings:
            click.echo(f"rule {rule.id!r}: warning: {warning}", err=True)
    if export_format == "ndjson":
        text = to_ndjson(exported)
        if output is None:
            click.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")
            click.echo(f"wrote {len(exported)} rule(s) to {output}", err=True)
        sys.exit(EXIT_FINDINGS if failed else 0)
    if output is None:
        click.echo("gatewatch: --format toml writes one file a rule: give a directory with -o", err=True)
        sys.exit(EXIT_BAD_INPUT)
    output.mkdir(parents=True, exist_ok=True)
    for name, result in zip(toml_file_names(exported), exported):
        (output / name).write_text(to_toml(result), encoding="utf-8")
    click.echo(f"wrote {len(exported)} rule file(s) to {output}", err=True)
    sys.exit(EXIT_FINDINGS if failed else 0)


def _register_operator_commands() -> None:
    # `run` and `uninstall-webhook` live with the operator; their module imports
    # kopf and the Kubernetes client only inside the commands.
    from gatewatch import cli_operator

    for value in vars(cli_operator).values():
        if isinstance(value, click.Command) and value.name not in main.commands:
            main.add_command(value)


_register_operator_commands()
