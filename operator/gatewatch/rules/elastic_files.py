"""Elastic rule files -> Elastic rule tables, whatever form the rules came in.

- detection-rules' TOML (one rule a file, ``[metadata]`` + ``[rule]``);
- Kibana's rule export / import NDJSON (one rule a line, the API format),
  which is also what ``gatewatch rules export-elastic --format ndjson`` writes.
  Its new_terms fields (``new_terms_fields`` + ``history_window_start``) are
  put back in the TOML form, so one converter reads both. Kibana's export
  summary line is skipped; its exception lists are named as not imported.

Each rule comes with where it was read (``file`` or ``file:line``), for the
messages about it.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewatch.errors import ImportRuleError

_EXPORT_SUMMARY_KEYS = ("exported_count", "exported_rules_count")


@dataclass
class ElasticFile:
    """The rules of one file: (where, rule file data with a ``rule`` table) pairs,
    lines that could not be read, and warnings about objects that are not rules."""

    rules: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def read_elastic_file(path: str | Path) -> ElasticFile:
    """Raises ImportRuleError when the file cannot be read at all."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ImportRuleError(f"cannot read: {error.strerror or error}", file=file) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ImportRuleError(f"not UTF-8 text: {error.reason} at byte {error.start}", file=file) from None
    if Path(path).suffix.lower() in (".ndjson", ".jsonl") or text.lstrip().startswith("{"):
        return _read_ndjson(text, file=file)
    try:
        return ElasticFile(rules=[(file, tomllib.loads(text))])
    except tomllib.TOMLDecodeError as error:
        raise ImportRuleError(f"invalid TOML: {error}", file=file) from None


def _read_ndjson(text: str, *, file: str) -> ElasticFile:
    result = ElasticFile()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as error:
            result.failures.append((where, f"invalid JSON: {error}"))
            continue
        if not isinstance(obj, dict):
            result.failures.append((where, "not a JSON object"))
        elif any(key in obj for key in _EXPORT_SUMMARY_KEYS):
            continue  # Kibana's export summary
        elif "rule_id" not in obj and "list_id" in obj:
            result.warnings.append((where, f"Kibana exception list {obj['list_id']!r} is not imported"))
        else:
            result.rules.append((where, {"rule": rule_table_from_api(obj)}))
    return result


def rule_table_from_api(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule in Kibana's API format -> the ``[rule]`` table of detection-rules' TOML."""
    table = dict(rule)
    if "new_terms_fields" in table:
        fields = table.pop("new_terms_fields")
        window = table.pop("history_window_start", None)
        table["new_terms"] = {"field": "new_terms_fields", "value": fields}
        if window is not None:
            table["new_terms"]["history_window_start"] = [{"field": "history_window_start", "value": window}]
    return table
