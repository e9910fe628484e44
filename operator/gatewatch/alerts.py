"""Alerts as ECS documents: one JSON line per match.

The same document comes out of ``gatewatch check --format json``,
``gatewatch replay --format json`` and the operator's alert sinks, so a SIEM
ingests all three alike. docs/alerts.md shows a sample.

The alert carries the rule's tags in ECS's top-level ``tags`` (a Pod Security
rule's ``Pod Security: baseline/privileged-containers`` among them) and, when
the match is about a Pod's fields, which ones (``gatewatch.offending_fields``,
``spec.initContainers[0].securityContext.privileged``) and the containers
they belong to (``gatewatch.offending_containers``), as Pod Security
Admission's messages name them.

Alerts leave the cluster, so the objects they carry are redacted
(``redact_object``, gatewatch.redaction): container environment values, managedFields and the
last-applied-configuration annotation never reach a SIEM, and credentials in
commands and args (exec commands, a container's command and args, the
requestURI of an exec) are replaced by "[redacted]" (gatewatch.credentials).
Rules match the document as it came in; only the alert's copy is redacted.
Objects nested deeper than ``MAX_ALERT_DEPTH`` are cut there, so any review
gives an alert.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

from gatewatch.documents import format_timestamp
from gatewatch.engine import Match
from gatewatch.evidence import offending_containers, offending_fields
from gatewatch.per_object import PerObject
from gatewatch.redaction import (  # noqa: F401  (MAX_ALERT_DEPTH ... redact_object: this module's API, as before)
    LAST_APPLIED_ANNOTATION,
    MAX_ALERT_DEPTH,
    REDACTED,
    TRUNCATED,
    _mapping,
    _redacted_audit,
    _shared_redacted,
    redact_object,
)

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
    spliced_audit: orjson.Fragment | None = None,
) -> dict[str, Any]:
    """The ECS alert for one match.

    ``effect`` is what the match caused (alert/warn/deny; None offline),
    ``mode`` the namespace's mode, ``decision`` "allowed" or "denied" for the
    request as a whole, ``extra`` more ``gatewatch.*`` fields (e.g. pod lookup).
    ``spliced_audit``: the document's audit event as ``encoded_audit`` made it, for
    an alert orjson writes (replay): redacted and encoded once per event, not per alert.
    """
    rule = match.rule
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    audit = document.get("kubernetes", {}).get("audit", {})
    event = document.get("event", {})
    fields = offending_fields(rule.matcher, document)
    of_rule = _RULE_PARTS.get(rule)
    # Spliced (orjson writes the alert): the rule's fields as encoded once per rule; else built afresh, as
    # the alert's own objects (a sink may change its alert).
    rule_fields = of_rule.encoded if spliced_audit is not None and of_rule.encoded is not None else _rule_fields(rule)
    # Built without nulls rather than copied without them (the copy of the whole alert cost a fifth of it):
    # only what comes from the document or the caller is copied, to drop its own nulls (``_put_kept``).
    event_part: dict[str, Any] = {"kind": "alert", "dataset": ALERT_DATASET, "module": "gatewatch"}
    _put_kept(event_part, "action", event.get("action"))
    if rule.risk_score is not None:
        event_part["severity"] = event_part["risk_score"] = rule.risk_score
    alert: dict[str, Any] = {
        "@timestamp": _alert_timestamp(stamp),
        "event": event_part,
        "message": f"{rule.name}: {_describe(document)}{_where(fields)}",
        **rule_fields,
        "kubernetes": {
            "audit": _redacted_audit(audit, drop_nulls=True) if spliced_audit is None else spliced_audit,
        },
    }
    source = document.get("gatewatch", {}).get("source")
    # Every key in its place, nulls too (``extra`` may set one), and the nulls left out at the end.
    own: dict[str, Any] = {
        "action": of_rule.action,
        "effect": _value(effect) if effect is not None else None,
        "decision": decision,
        "mode": _value(mode) if mode is not None else None,
        "severity": of_rule.severity,
        "new_terms": match.is_new_terms,
        "new_terms_evaluated": match.new_terms_evaluated,
        "source": _kept(source),
        "offending_fields": fields or None,
        "offending_containers": (offending_containers(fields, document) or None) if fields else None,
    }
    alert["gatewatch"] = own  # its place among the alert's keys; replaced by its copy without nulls below
    for ecs_field in ("orchestrator", "user", "user_agent", "source", "container"):
        if ecs_field in document:
            _put_kept(alert, ecs_field, document[ecs_field])
    if match.new_terms_key is not None and rule.new_terms is not None:
        own["new_terms_fields"] = list(
            rule.new_terms.admission_fields() if source == "admission" else rule.new_terms.fields)
        own["new_terms_values"] = list(match.new_terms_key)
    if file_path is not None:
        alert["file"] = {"path": file_path}
    if extra:
        for key, value in extra.items():
            own[key] = _kept(value)
    alert["gatewatch"] = {key: value for key, value in own.items() if value is not None}
    return alert


def _put_kept(part: dict[str, Any], key: str, value: Any) -> None:
    """``part[key] = value`` as the alert keeps it: nothing for null, a plain dict without its nulls."""
    if value is not None:
        part[key] = _kept(value)


def _kept(value: Any) -> Any:
    """A value from the document or the caller as the alert keeps it: a plain dict without its nulls."""
    return _nulls_dropped(value, None) if value.__class__ is dict else value


def _alert_timestamp(stamp: datetime) -> str:
    """``stamp`` (in UTC) as an alert's @timestamp: its isoformat, "Z" for "+00:00"."""
    if stamp.microsecond and stamp.year >= 1000:
        return format_timestamp(stamp)  # the same text (isoformat leaves out microseconds of 0), once per second
    return stamp.isoformat().replace("+00:00", "Z")


def _rule_fields(rule: Any) -> dict[str, Any]:
    """What of an alert depends on its rule alone (``tags``, ``rule``, ``threat``), without nulls."""
    return _without_nulls({
        "tags": list(rule.tags) or None,
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "description": rule.description,
            "reference": rule.references[0] if rule.references else None,
            "ruleset": rule.ruleset,
            "category": _value(rule.type),
        },
        "threat": _threat(rule),
    })


class _RulePart:
    """A rule's share of its alerts, worked out once per rule object: ``encoded``, its fields (_rule_fields)
    as ``orjson.Fragment``s for an alert orjson writes (None: orjson cannot write one, e.g. a lone surrogate)."""

    __slots__ = ("action", "severity", "encoded")

    def __init__(self, rule: Any) -> None:
        self.action = _value(rule.action)
        self.severity = _value(rule.severity)
        try:
            self.encoded: dict[str, orjson.Fragment] | None = {
                key: orjson.Fragment(orjson.dumps(value, default=str)) for key, value in _rule_fields(rule).items()}
        except (TypeError, orjson.JSONEncodeError):
            self.encoded = None


_RULE_PARTS: PerObject[_RulePart] = PerObject(_RulePart)


def encoded_audit(document: Mapping[str, Any]) -> bytes | None:
    """The document's audit event as its alerts carry it (redacted, without nulls), as orjson writes it:
    the bytes of an ``orjson.Fragment`` for ``build_alert(spliced_audit=...)``. None when orjson cannot write it
    (a lone surrogate, an integer beyond 64 bits): its alerts are then built whole, and written the stdlib's way."""
    return _encoded_audit_part(document, option=None)


def _encoded_audit_part(document: Mapping[str, Any], *, option: int | None) -> bytes | None:
    """The document's audit part redacted, without nulls, as orjson writes it with ``option``; None when it cannot."""
    audit = document.get("kubernetes", {}).get("audit", {})  # as build_alert reads it
    try:
        # Encoded at once, so it may share what redaction leaves as it is with the document (_shared_redacted).
        return orjson.dumps(_redacted_audit(audit, drop_nulls=True, walk=_shared_redacted), default=str, option=option)
    except (TypeError, orjson.JSONEncodeError):
        return None


class SharedAuditPart:
    """The audit part of one document's alerts as their lines carry it, for ``shared_alert_line``: redacted,
    without nulls and encoded once (by the first of them), then spliced into each (the webhook: one per review).

    ``fragment`` is None when orjson cannot write the part, or writes it other than an alert line must be
    (not ASCII; ``alert_line``): the document's alerts are then built whole.
    """

    __slots__ = ("_document", "_fragment", "_encoded")

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        self._fragment: orjson.Fragment | None = None
        self._encoded = False

    def fragment(self) -> orjson.Fragment | None:
        if not self._encoded:
            encoded = _encoded_audit_part(self._document, option=_ORJSON_AS_STDLIB)
            if encoded is not None and _ascii_line(encoded):
                self._fragment = orjson.Fragment(encoded)
            self._encoded = True
        return self._fragment


def shared_alert_line(match: Match, document: Mapping[str, Any], *, audit: SharedAuditPart, **fields: Any) -> str:
    """``alert_line(build_alert(match, document, **fields))``, the same line, with the audit part spliced in as
    ``audit`` encoded it for all of the document's alerts and the rule's part as encoded once per rule."""
    spliced = audit.fragment()
    if spliced is not None:
        line = _orjson_line(build_alert(match, document, spliced_audit=spliced, **fields))
        if line is not None:
            return line
    # Another part orjson refuses or writes otherwise: the alert built whole, written the stdlib's way.
    return alert_line(build_alert(match, document, **fields))


def alert_event(document: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One of the events behind an alert that many events make (an EQL sequence): its
    time, action, what happened in words, its audit event redacted as an alert's, and ECS user fields."""
    event: dict[str, Any] = {
        "@timestamp": document.get("@timestamp"),
        "message": _describe(document),
        "event": {"action": _mapping(document.get("event")).get("action")},
        "kubernetes": (audit_part := {
            "audit": _redacted_audit(_mapping(_mapping(document.get("kubernetes")).get("audit")), drop_nulls=True),
        }),
    }
    for ecs_field in ("orchestrator", "user", "user_agent", "source"):
        if ecs_field in document:
            event[ecs_field] = document[ecs_field]
    if extra:
        event.update(extra)
    return _without_nulls(event, done=audit_part)


def alert_line(alert: Mapping[str, Any]) -> str:
    """One compact JSON line (no newline), ASCII only (non-ASCII text as ``\\u`` escapes).

    orjson writes it (about a tenth of the stdlib encoder's time, on the alert
    workers' CPU); its bytes are the stdlib's for the same alert. What orjson
    does not write the stdlib's way goes through the stdlib encoder: non-ASCII
    text (orjson writes UTF-8, the line stays ASCII as it always was), and
    what orjson refuses (a lone surrogate, an integer beyond 64 bits, a key
    that is not a string). Floats are the one difference: orjson writes an
    exponent without padding (``1e-7``, not ``1e-07``: the same number) and
    NaN or an infinity as ``null`` (the stdlib's ``NaN`` is not JSON).
    """
    line = _orjson_line(alert)
    return line if line is not None else _stdlib_alert_line(alert)


def _orjson_line(alert: Mapping[str, Any]) -> str | None:
    """The alert's line as orjson writes it, when that is the stdlib's line; None when it is not (or orjson
    refuses the alert)."""
    try:
        encoded = orjson.dumps(alert, default=str, option=_ORJSON_AS_STDLIB)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return encoded.decode("ascii") if _ascii_line(encoded) else None


def _ascii_line(encoded: bytes) -> bool:
    """orjson wrote these bytes as the stdlib writes an ASCII-only line: no non-ASCII text, and no DEL
    (ASCII, but the stdlib escapes it)."""
    return encoded.isascii() and b"\x7f" not in encoded


# Datetimes and dataclasses to ``default=str`` as the stdlib does, not orjson's own format.
_ORJSON_AS_STDLIB = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _stdlib_alert_line(alert: Mapping[str, Any]) -> str:
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
    # Input is untrusted: any of these may be missing or of another type.
    audit = _mapping(_mapping(document.get("kubernetes")).get("audit"))
    ref = _mapping(audit.get("objectRef"))
    user = _mapping(audit.get("user")).get("username") or "unknown user"
    resource = str(ref.get("resource") or "?")
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    target = "/".join(str(part) for part in (ref.get("namespace"), ref.get("name")) if part)
    return f"{user} {audit.get('verb', '?')} {resource} {target}".strip()


# How many offending fields the message names (the alert's gatewatch.offending_fields has them all).
_FIELDS_IN_MESSAGE = 3


def _where(fields: list[str]) -> str:
    if not fields:
        return ""
    more = len(fields) - _FIELDS_IN_MESSAGE
    shown = ", ".join(fields[:_FIELDS_IN_MESSAGE]) + (f" and {more} more" if more > 0 else "")
    return f" ({shown})"


def _value(value: Any) -> Any:
    return getattr(value, "value", value)


def _without_nulls(value: Any, *, done: Any = None) -> Any:
    """A copy of ``value`` without null values in its mappings, through mappings (not lists);
    ``done``: a part already without them, kept as it is."""
    return _nulls_dropped(value, done) if isinstance(value, dict) else value


def _nulls_dropped(value: dict[str, Any], done: Any) -> dict[str, Any]:
    # Positional and dict-only: it runs for every mapping of an alert outside its audit part.
    return {k: _nulls_dropped(v, done) if v.__class__ is dict and v is not done else v
            for k, v in value.items() if v is not None}
