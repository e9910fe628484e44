"""``gatewatch rules import-elastic``: Elastic detection rules -> rules.yaml text.

Converts the rule files of github.com/elastic/detection-rules (``[metadata]`` +
``[rule]`` tables) and Kibana's rule export NDJSON (read by ``elastic_files``):
``query`` and ``new_terms`` rules in kuery as they are, ``eql`` rules whose
condition is a single ``any where`` expression through ``gatewatch.rules.eql``,
EQL ``sequence`` rules of ``any where`` steps as written (``language: eql``,
replay only),
``esql`` rules as they are (``language: esql``, compiled by ``gatewatch.esql``);
one with STATS keeps Elastic's ``interval`` and ``from`` as its ``schedule``,
for replay (admission never evaluates it). An EQL condition KQL can express exactly is stored as
KQL; one that needs EQL's case-insensitive matching keeps ``language: eql``
and its original text (the loader translates it the same way).

Kept: rule_id (as id), name, description, severity, risk_score, threat,
references, false_positives, tags, new_terms fields and history window.
Every imported rule gets ``action: alert``: it never warns or denies until a
person raises it (``keep_action`` takes the action a gatewatch export recorded).
A rule gatewatch exported comes back as it was: its id, query and exceptions
are restored from ``meta.gatewatch`` (``elastic_meta``) where they agree with
what Elastic has. Each converted rule is loaded back before it is accepted, so
the output always loads.

A rule fails only when it cannot be converted at all (its query, its type, a
required field), and the failure names why. Metadata never fails it: the
ATT&CK mapping is normalized against the shipped ATT&CK table
(``elastic_threat``), and whatever was odd is a warning.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatewatch.errors import EqlSyntaxError, EsqlSyntaxError, GatewatchError, ImportRuleError, KqlSyntaxError, RuleError
from gatewatch.esql import parse as parse_esql
from gatewatch.kql import KqlRenderError, parse, to_kql
from gatewatch.rules.elastic_files import read_elastic_file
from gatewatch.rules.elastic_meta import restore
from gatewatch.rules.elastic_threat import normalize_threat
from gatewatch.rules.eql import eql_sequence, eql_to_ast, event_category, is_sequence, sequence_categories
from gatewatch.rules.loader import SEQUENCE_AT_ADMISSION, STATS_AT_ADMISSION, load_rules_text
from gatewatch.rules.model import FORMAT_VERSION, Action

DEFAULT_RULESET = "elastic-import"
REJECTED_TYPES = {
    "threshold": "threshold rules are not supported (they count events over time; gatewatch sees one request)",
    "threat_match": "indicator match (threat_match) rules are not supported (they need threat-intel indices)",
    "machine_learning": "machine_learning rules are not supported (they need Elastic ML jobs)",
}
_HEADER = (
    "# Imported from Elastic detection rules by `gatewatch rules import-elastic`.\n"
    "# Every rule has action: alert. Review a rule, then raise its action to warn or deny.\n"
    "# Format: docs/rules.md\n"
)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """``rules_yaml`` holds the converted rules ("" when none converted);
    ``failures`` one (file, reason) per file that could not be converted;
    ``warnings`` (file, message) about what was changed or left behind in
    converted files."""

    rules_yaml: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)


def import_elastic_rules(
    paths: Sequence[str | Path], *, ruleset: str = DEFAULT_RULESET, keep_action: bool = False
) -> ImportResult:
    """Convert every rule it can; name each one it cannot (``file`` or ``file:line``) with the reason.

    ``keep_action``: take the action a gatewatch export recorded (meta.gatewatch.action)
    instead of ``alert``.
    """
    converted: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    first_file_of: dict[str, str] = {}
    for path in paths:
        try:
            elastic_file = read_elastic_file(path)
        except ImportRuleError as error:
            failures.append((str(path), error.reason))
            continue
        failures.extend(elastic_file.failures)
        warnings.extend(elastic_file.warnings)
        for where, data in elastic_file.rules:
            try:
                rule, rule_warnings = convert_elastic_rule(data, file=where, keep_action=keep_action)
                _check_loads([rule], ruleset=ruleset, file=where)
            except ImportRuleError as error:
                failures.append((where, error.reason))
                continue
            if rule["id"] in first_file_of:
                failures.append((where, f"duplicate rule_id {rule['id']} (also in {first_file_of[rule['id']]})"))
                continue
            first_file_of[rule["id"]] = where
            converted.append(rule)
            warnings.extend((where, warning) for warning in rule_warnings)
    text = render_rules_yaml(converted, ruleset=ruleset) if converted else ""
    if converted:
        load_rules_text(text, file="<imported rules>", allow_empty=True)  # the whole file must load, not only each rule
    return ImportResult(rules_yaml=text, failures=failures, warnings=warnings, rule_ids=[r["id"] for r in converted])


def convert_elastic_file(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read and convert a file holding one Elastic rule (raises ImportRuleError)."""
    elastic_file = read_elastic_file(path)
    if elastic_file.failures:
        raise ImportRuleError(elastic_file.failures[0][1], file=elastic_file.failures[0][0])
    if len(elastic_file.rules) != 1:
        raise ImportRuleError(f"holds {len(elastic_file.rules)} rules, not one", file=str(path))
    ((where, data),) = elastic_file.rules
    return convert_elastic_rule(data, file=where)


def convert_elastic_rule(
    data: Mapping[str, Any], *, file: str = "<toml>", keep_action: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """One parsed Elastic rule file -> (our rule mapping, warnings about what was changed or left behind)."""
    rule = data.get("rule")
    if not isinstance(rule, Mapping):
        raise ImportRuleError("no [rule] table: not an Elastic detection rule file", file=file)
    warnings: list[str] = []

    def required(key: str, kind: type | tuple[type, ...] = str) -> Any:
        value = rule.get(key)
        if value is None:
            raise ImportRuleError(f"[rule] has no {key}", file=file)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ImportRuleError(f"[rule] {key} has the wrong type ({type(value).__name__})", file=file)
        return value

    rule_type = rule.get("type", "query")
    if rule_type in REJECTED_TYPES:
        raise ImportRuleError(REJECTED_TYPES[rule_type], file=file)
    if rule_type not in ("query", "new_terms", "eql", "esql"):
        raise ImportRuleError(
            f"rule type {rule_type!r} is not supported (query, new_terms, eql and esql are)", file=file
        )
    language = rule.get("language", rule_type if rule_type in ("eql", "esql") else "kuery")
    query = required("query").strip()

    converted: dict[str, Any] = {
        "id": required("rule_id"),
        "name": required("name").strip(),
        "description": textwrap.dedent(required("description")).strip(),
        "severity": required("severity"),
        "risk_score": required("risk_score", int),
        "type": "new_terms" if rule_type == "new_terms" else "query",
    }
    if rule_type == "eql":
        if language != "eql":
            raise ImportRuleError(f"an eql rule with language {language!r}", file=file)
        _refuse_endpoint_data(query, rule.get("index"), file=file)
        if is_sequence(query):
            # Kept as written; replay runs it over event time, admission never can.
            converted["language"], converted["query"] = "eql", _checked_sequence(query, file=file)
            warnings.append(SEQUENCE_AT_ADMISSION)
        else:
            converted["language"], converted["query"] = _convert_eql(query, file=file)
    elif rule_type == "esql":
        if language != "esql":
            raise ImportRuleError(f"an esql rule with language {language!r}", file=file)
        converted["language"], converted["query"] = "esql", query  # the loader parses and compiles it
        if _has_stats(query):
            # Replay runs it as Elastic schedules it; admission never can.
            converted["schedule"] = {"interval": str(rule.get("interval") or "5m"),
                                     "from": str(rule.get("from") or "now-6m")}
            warnings.append(STATS_AT_ADMISSION)
    else:
        if language != "kuery":
            raise ImportRuleError(f"query language {language!r} is not supported (kuery is)", file=file)
        _check_kql(query, file=file)
        converted["language"], converted["query"] = "kuery", query
    if rule_type == "new_terms":
        converted["new_terms"] = _new_terms(rule.get("new_terms"), file=file)
    threat, threat_warnings = normalize_threat(rule.get("threat"))
    warnings.extend(threat_warnings)
    if threat:
        converted["threat"] = threat
    own = restore(rule, query=query)  # what a gatewatch export kept of the rule
    warnings.extend(own.warnings)
    if own.rule_id is not None:
        converted["id"] = own.rule_id
    if own.query is not None and converted["language"] == "kuery":
        converted["query"] = own.query
    converted["action"] = Action.ALERT.value
    if own.action is not None and keep_action:
        converted["action"] = own.action
    elif own.action not in (None, Action.ALERT.value):
        warnings.append(f"exported by gatewatch with action {own.action}: imported with action alert (--keep-action keeps it)")
    if own.exceptions:
        converted["exceptions"] = own.exceptions
    for key in ("false_positives", "references", "tags"):
        values = rule.get(key)
        if values:
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                warnings.append(f"[rule] {key} is not a list of strings: left out")
                continue
            cleaned = [textwrap.dedent(v).strip() for v in values if v.strip()]
            if cleaned:
                converted[key] = cleaned
    if own.enabled is False:
        converted["enabled"] = False
    indices = rule.get("index") or []
    if isinstance(indices, list) and indices and not any("kubernetes" in str(index) for index in indices):
        warnings.append(
            f"index {', '.join(map(str, indices))} is not Kubernetes audit logs: "
            "the rule may never match a gatewatch document"
        )
    if rule.get("exceptions_list"):
        warnings.append("exceptions_list refers to Kibana exception lists, which are not imported")
    return converted, warnings


def _has_stats(query: str) -> bool:
    try:
        return parse_esql(query).has_stats
    except EsqlSyntaxError:
        return False  # the loader reports the syntax error with its position


def _check_kql(query: str, *, file: str) -> None:
    try:
        parse(query)
    except KqlSyntaxError as error:
        raise ImportRuleError(
            f"KQL syntax error at query line {error.line}, column {error.column}: {error.reason}", file=file
        ) from None


def _refuse_endpoint_data(query: str, index: Any, *, file: str) -> None:
    """``process where`` / ``file where`` rules (or sequence steps) read what a sensor inside the node saw."""
    categories = sequence_categories(query) if is_sequence(query) else (event_category(query),)
    category = next((c for c in categories if c is not None and c != "any"), None)
    if category is None:
        return
    indices = ", ".join(map(str, index)) if isinstance(index, list) and index else "endpoint indices"
    raise ImportRuleError(
        f"endpoint-data rule (EQL '{category} where'): it needs {category} events from Elastic Defend for "
        f"Containers ({indices}), not Kubernetes audit logs, which are all gatewatch sees",
        file=file,
    )


def _checked_sequence(query: str, *, file: str) -> str:
    """The sequence query as written, once gatewatch translates every step."""
    try:
        eql_sequence(query)
    except EqlSyntaxError as error:
        kind = "unsupported EQL" if error.unsupported else "EQL syntax error"
        raise ImportRuleError(
            f"{kind} at query line {error.line}, column {error.column}: {error.reason}", file=file
        ) from None
    return query


def _convert_eql(query: str, *, file: str) -> tuple[str, str]:
    """EQL -> ("kuery", KQL text) when KQL says exactly the same, else ("eql", the EQL)."""
    try:
        node = eql_to_ast(query)
    except EqlSyntaxError as error:
        kind = "unsupported EQL" if error.unsupported else "EQL syntax error"
        raise ImportRuleError(
            f"{kind} at query line {error.line}, column {error.column}: {error.reason}", file=file
        ) from None
    try:
        text = to_kql(node)
    except KqlRenderError:
        return "eql", query  # case-insensitive matches: only EQL says that
    # Keep the KQL only if it reads back as the very same tree.
    try:
        if parse(text) == node:
            return "kuery", text
    except KqlSyntaxError:
        pass
    return "eql", query


def _new_terms(raw: Any, *, file: str) -> dict[str, Any]:
    # Elastic: [rule.new_terms] field = "new_terms_fields", value = [...],
    #          [[rule.new_terms.history_window_start]] field = "history_window_start", value = "now-7d"
    if not isinstance(raw, Mapping):
        raise ImportRuleError("a new_terms rule without [rule.new_terms]", file=file)
    fields = raw.get("value")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise ImportRuleError("[rule.new_terms] value must list the new terms fields", file=file)
    result: dict[str, Any] = {"fields": list(fields)}
    windows = raw.get("history_window_start") or []
    if isinstance(windows, Mapping):
        windows = [windows]
    for window in windows:
        if isinstance(window, Mapping) and window.get("field") == "history_window_start":
            value = window.get("value")
            if not isinstance(value, str):
                raise ImportRuleError("history_window_start value must be a string like now-7d", file=file)
            result["history_window"] = value.strip()
    return result


# --- output -----------------------------------------------------------------------


class _RulesDumper(yaml.SafeDumper):
    """Multi-line strings (queries) as literal blocks, so they read like the TOML did."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        text = "\n".join(line.rstrip() for line in value.splitlines()) + "\n"
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_RulesDumper.add_representer(str, _represent_str)


def render_rules_yaml(rules: Sequence[Mapping[str, Any]], *, ruleset: str = DEFAULT_RULESET) -> str:
    """A complete rules.yaml (version, ruleset, rules) for converted rules."""
    document = {"version": FORMAT_VERSION, "ruleset": ruleset, "rules": [dict(rule) for rule in rules]}
    body = yaml.dump(document, Dumper=_RulesDumper, sort_keys=False, allow_unicode=True, width=100)
    if any(rule.get("action", Action.ALERT.value) != Action.ALERT.value for rule in rules):
        return _HEADER.replace("Every rule has action: alert", "Actions as a gatewatch export recorded them") + body
    return _HEADER + body


def _check_loads(rules: Sequence[Mapping[str, Any]], *, ruleset: str, file: str) -> None:
    """Load the converted rule back; a rule our format refuses is a failed import."""
    try:
        load_rules_text(render_rules_yaml(rules, ruleset=ruleset), file="<converted>", allow_empty=True)
    except RuleError as error:
        where = f"field {error.field}: " if error.field else ""
        raise ImportRuleError(f"{where}{error.reason}", file=file) from None
    except GatewatchError as error:  # pragma: no cover - the loader raises RuleError only
        raise ImportRuleError(str(error), file=file) from None
