"""Alerts as ECS documents: one JSON line per match.

The same document comes out of ``gatewatch check --format json``,
``gatewatch replay --format json`` and the operator's alert sinks, so a SIEM
ingests all three alike. docs/alerts.md shows a sample.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Mapping, TextIO

from gatewatch.engine import Match

ALERT_DATASET = "gatewatch.alerts"


def build_alert(
    match: Match,
    document: Mapping[str, Any],
    *,
    effect: Any = None,
    mode: Any = None,
    decision: str | None = None,
    file_path: str | None = None,
    now: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ECS alert for one match.

    ``effect`` is what the match caused (alert/warn/deny; None offline),
    ``mode`` the namespace's mode, ``decision`` "allowed" or "denied" for the
    request as a whole, ``extra`` more ``gatewatch.*`` fields (e.g. pod lookup).
    """
    rule = match.rule
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    audit = document.get("kubernetes", {}).get("audit", {})
    event = document.get("event", {})
    alert: dict[str, Any] = {
        "@timestamp": stamp.isoformat().replace("+00:00", "Z"),
        "event": {
            "kind": "alert",
            "dataset": ALERT_DATASET,
            "module": "gatewatch",
            "action": event.get("action"),
            "severity": rule.risk_score,
            "risk_score": rule.risk_score,
        },
        "message": f"{rule.name}: {_describe(document)}",
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "description": rule.description,
            "reference": rule.references[0] if rule.references else None,
            "ruleset": rule.ruleset,
            "category": _value(rule.type),
        },
        "threat": _threat(rule),
        "kubernetes": {"audit": dict(audit)},
        "gatewatch": {
            "action": _value(rule.action),
            "effect": _value(effect) if effect is not None else None,
            "decision": decision,
            "mode": _value(mode) if mode is not None else None,
            "severity": _value(rule.severity),
            "new_terms": match.is_new_terms,
            "new_terms_evaluated": match.new_terms_evaluated,
            "source": document.get("gatewatch", {}).get("source"),
        },
    }
    for ecs_field in ("orchestrator", "user", "user_agent", "source", "container"):
        if ecs_field in document:
            alert[ecs_field] = document[ecs_field]
    if match.new_terms_key is not None and rule.new_terms is not None:
        alert["gatewatch"]["new_terms_fields"] = list(
            rule.new_terms.admission_fields()
            if alert["gatewatch"]["source"] == "admission"
            else rule.new_terms.fields
        )
        alert["gatewatch"]["new_terms_values"] = list(match.new_terms_key)
    if file_path is not None:
        alert["file"] = {"path": file_path}
    if extra:
        alert["gatewatch"].update(extra)
    return _without_nulls(alert)


def alert_line(alert: Mapping[str, Any]) -> str:
    """One compact JSON line (no newline)."""
    return json.dumps(alert, separators=(",", ":"), sort_keys=False, default=str)


class StdoutAlertSink:
    """Writes each alert as one JSON line on stdout (logs go to stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def emit(self, alert: Mapping[str, Any]) -> None:
        stream = self._stream or sys.stdout
        stream.write(alert_line(alert) + "\n")
        stream.flush()


def _threat(rule: Any) -> dict[str, Any] | None:
    """ECS ``threat.*``: one object of arrays (tactics and techniques in rule order, no repeats)."""
    if not rule.threat:
        return None
    tactics: dict[str, Any] = {}
    techniques: dict[str, Any] = {}
    subtechniques: dict[str, Any] = {}
    for threat in rule.threat:
        tactics.setdefault(threat.tactic.id, threat.tactic)
        for technique in threat.techniques:
            techniques.setdefault(technique.id, technique)
            for sub in technique.subtechniques:
                subtechniques.setdefault(sub.id, sub)
    entry: dict[str, Any] = {"framework": rule.threat[0].framework, "tactic": _columns(tactics)}
    if techniques:
        entry["technique"] = _columns(techniques)
        if subtechniques:
            entry["technique"]["subtechnique"] = _columns(subtechniques)
    return entry


def _columns(items: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "id": [item.id for item in items.values()],
        "name": [item.name for item in items.values()],
        "reference": [item.reference for item in items.values()],
    }


def _describe(document: Mapping[str, Any]) -> str:
    audit = document.get("kubernetes", {}).get("audit", {})
    ref = audit.get("objectRef", {}) or {}
    user = (audit.get("user") or {}).get("username") or "unknown user"
    resource = ref.get("resource", "?")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    target = "/".join(part for part in (ref.get("namespace"), ref.get("name")) if part)
    return f"{user} {audit.get('verb', '?')} {resource} {target}".strip()


def _value(value: Any) -> Any:
    return getattr(value, "value", value)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
