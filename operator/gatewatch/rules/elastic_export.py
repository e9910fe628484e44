"""``gatewatch rules export-elastic``: gatewatch rules -> Elastic detection rules.

Two forms of the same rule:

- Elastic's detection-rule TOML (github.com/elastic/detection-rules: one file
  a rule, ``[metadata]`` + ``[rule]``), for a rules-as-code repository;
- Kibana's rule import NDJSON (one rule a line, the body of
  ``POST /api/detection_engine/rules/_import``), as detection-rules' own
  ``to_api_format`` writes it: the ``[rule]`` keys, with new_terms as
  ``new_terms_fields`` + ``history_window_start``.

Elastic runs what gatewatch would have matched: a KQL rule's query, with its
exceptions folded in (``(query) and not (exception)``), is rendered from the
parsed trees as plain KQL, which Elastic's own grammar reads (tested on
Elastic's 729 public KQL queries); EQL and ES|QL queries are kept as written.
What Elastic has no field for (the action,
the exceptions as written, an id that is not a UUID) travels in
``meta.gatewatch`` (``elastic_meta``), so importing the export gives the same
rules back.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import tomli_w

from gatewatch.errors import ExportRuleError
from gatewatch.rules.elastic_meta import elastic_query, elastic_rule_id, meta_for
from gatewatch.rules.model import Rule, RuleType, Threat

AUDIT_LOG_INDEX = ("logs-kubernetes.audit_logs-*",)
AUTHOR = ("gatewatch",)  # gatewatch keeps no author for a rule; Elastic's TOML requires one


@dataclass(frozen=True, slots=True)
class ExportedRule:
    """One rule in Elastic's forms; ``warnings`` say what Elastic will not do as gatewatch does."""

    rule_id: str  # Elastic's rule_id
    api: dict[str, Any]  # Kibana's import format (one NDJSON line)
    toml: dict[str, Any]  # detection-rules' TOML document
    warnings: list[str] = field(default_factory=list)


def export_rule(rule: Rule, *, today: date) -> ExportedRule:
    """``today`` dates the TOML's metadata (creation and update date), as detection-rules requires.

    Raises ``ExportRuleError`` for a rule Elastic has no form for.
    """
    warnings: list[str] = []
    language = str(rule.language)
    if rule.type is RuleType.NEW_TERMS and language != "kuery":
        raise ExportRuleError(f"Elastic's new_terms rules are KQL only; this one is {language}", rule_id=rule.id)
    query = elastic_query(rule.query, rule.exceptions) if language == "kuery" else rule.query.strip()
    if rule.exceptions and language != "kuery":
        warnings.append(
            f"its exceptions cannot be folded into a {language} query: Elastic will not apply them "
            "(they are kept in meta.gatewatch)"
        )
    if language == "eql":
        rule_type = "eql"
    elif language == "esql":
        rule_type = "esql"
    else:
        rule_type = str(rule.type)
    body: dict[str, Any] = {
        "rule_id": elastic_rule_id(rule.id),
        "name": rule.name,
        "description": rule.description,
        "author": list(AUTHOR),
        "severity": str(rule.severity),
        "risk_score": rule.risk_score,
        "type": rule_type,
        "language": language,
    }
    if language != "esql":  # an ES|QL query names its indices in FROM
        body["index"] = list(AUDIT_LOG_INDEX)
    body["enabled"] = rule.enabled
    if rule.schedule is not None:  # Elastic's own names for when it runs the rule
        body["interval"] = _duration(rule.schedule.interval)
        body["from"] = "now-" + _duration(rule.schedule.lookback)
    for key in ("false_positives", "references", "tags"):
        values = getattr(rule, key)
        if values:
            body[key] = list(values)
    body["threat"] = [_threat(threat) for threat in rule.threat]
    body["meta"] = meta_for(
        rule_id=rule.id, action=str(rule.action), query=rule.query.strip(), exceptions=rule.exceptions,
        exported_query=query, enabled=rule.enabled,
    )
    body["query"] = query
    api = dict(body)
    toml_rule = dict(body)
    if rule.type is RuleType.NEW_TERMS and rule.new_terms is not None:
        window = "now-" + _duration(rule.new_terms.history_window)
        api["new_terms_fields"] = list(rule.new_terms.fields)
        api["history_window_start"] = window
        toml_rule["new_terms"] = {
            "field": "new_terms_fields", "value": list(rule.new_terms.fields),
            "history_window_start": [{"field": "history_window_start", "value": window}],
        }
    stamp = today.strftime("%Y/%m/%d")
    metadata = {"creation_date": stamp, "integration": ["kubernetes"], "maturity": "production", "updated_date": stamp}
    return ExportedRule(rule_id=body["rule_id"], api=api, toml={"metadata": metadata, "rule": toml_rule}, warnings=warnings)


def _attack(item: Any) -> dict[str, str]:
    return {"id": item.id, "name": item.name, "reference": item.reference}


def _threat(threat: Threat) -> dict[str, Any]:
    techniques = []
    for technique in threat.techniques:
        entry = _attack(technique)
        if technique.subtechniques:
            entry["subtechnique"] = [_attack(sub) for sub in technique.subtechniques]
        techniques.append(entry)
    return {"framework": threat.framework, "tactic": _attack(threat.tactic), "technique": techniques}


def _duration(window: timedelta) -> str:
    """Elastic's date-math unit for a history window: the largest that divides it."""
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --- the two forms ---------------------------------------------------------------------------


def to_ndjson(rules: Sequence[ExportedRule]) -> str:
    """Kibana's rule import file: one JSON rule a line."""
    return "".join(json.dumps(rule.api, ensure_ascii=False) + "\n" for rule in rules)


def to_toml(rule: ExportedRule) -> str:
    """detection-rules' TOML: [metadata], then [rule] with the query last, as Elastic writes them."""
    return _table(rule.toml, ())


def toml_file_names(rules: Sequence[ExportedRule]) -> list[str]:
    """One file name a rule, from its name (Elastic's habit), unique within the export."""
    names: list[str] = []
    for rule in rules:
        stem = re.sub(r"[^a-z0-9]+", "_", rule.api["name"].lower()).strip("_") or "rule"
        name = f"{stem}.toml"
        if name in names:
            name = f"{stem}_{rule.rule_id[:8]}.toml"
        names.append(name)
    return names


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _table(table: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """One TOML table and its sub-tables. Values are written by tomli-w; a multi-line
    string that a literal string can hold is written as one ('''...'''), as Elastic does."""
    lines: list[str] = []
    scalars = [(k, v) for k, v in table.items() if not _is_table(v) and not _is_table_array(v)]
    for key, value in sorted(scalars, key=lambda item: item[0] == "query"):  # the query last, as in Elastic's files
        lines.append(f"{_key(key)} = {_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in table.items():
        sub_path = (*path, key)
        if _is_table(value):
            text += f"\n[{'.'.join(map(_key, sub_path))}]\n" + _table(value, sub_path)
        elif _is_table_array(value):
            for item in value:
                text += f"\n[[{'.'.join(map(_key, sub_path))}]]\n" + _table(item, sub_path)
    return text


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: Any) -> str:
    """Strings with quotes or backslashes (queries) as TOML literal strings, which need no escapes."""
    if isinstance(value, str) and _literal_safe(value):
        if "\n" in value and "'''" not in value:
            return "'''\n" + value + "'''"  # the newline after the opening quotes is not part of the value
        if "\n" not in value and "'" not in value and ('"' in value or "\\" in value):
            return f"'{value}'"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _literal_safe(text: str) -> bool:
    """A TOML literal string holds no control character but tab and newline."""
    return not any((ord(c) < 0x20 and c not in "\t\n") or ord(c) == 0x7F for c in text)
