"""Audit log (audit.k8s.io/v1 Event, one JSON line) -> document.

An event is refused only when it is not an audit event at all
(``check_audit_event``); a field of the wrong type is absent from the
document, as Elastic would index it (gatewatch.shapes.audit_event_view).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gatewatch.documents.mapping import _build_document
from gatewatch.errors import InputError
from gatewatch.shapes import audit_event_refusal, audit_event_view


def check_audit_event(event: Any, *, pod_fields: bool = True) -> None:
    """Raise InputError when ``event`` is not an audit event at all (not an object, wrong kind or
    apiVersion, no verb): the only events replay drops. Fields of the wrong type are not refused
    (gatewatch.shapes.audit_event_view sets them aside, the normalized Pod lists' included, so
    ``pod_fields`` changes nothing here; it is kept for callers that pass it)."""
    refusal = audit_event_refusal(event)
    if refusal is not None:
        raise InputError(refusal)


def _audit_timestamp(event: Mapping[str, Any]) -> Any:
    return (
        event.get("stageTimestamp")
        or event.get("requestReceivedTimestamp")
        or event.get("timestamp")  # audit.k8s.io/v1beta1
    )


def document_from_audit_event(
    event: Mapping[str, Any], *, checked: bool = False, pod_fields: bool = True
) -> dict[str, Any]:
    """Map one audit.k8s.io/v1 (or v1beta1) Event onto the document.

    Raises InputError when ``event`` is not an audit event (see
    check_audit_event); the caller adds the file and line. A field of the
    wrong type is absent from the document (gatewatch.shapes). ``checked=True``
    says ``event`` is already the view audit_event_view returned (replay
    checks every line once), so it is not conformed again. ``pod_fields=False``
    leaves out the normalized Pod lists (``RuleEngine.reads_pod_fields`` says
    when none is needed).
    """
    if not checked:
        event = audit_event_view(event).event
    return _build_document(
        event, source="audit", timestamp=_audit_timestamp(event), object_checked=True, with_pod_fields=pod_fields
    )


def document_from_audit_line(text: str | bytes, *, source: str | None = None, line: int | None = None) -> dict[str, Any]:
    """Parse one JSON line of an audit log (log backend) into a document.

    Errors name ``source:line``.
    """
    try:
        event = json.loads(text)
    except ValueError as error:
        raise InputError(f"not valid JSON: {error}", source=source, line=line) from None
    except RecursionError:
        raise InputError("not valid JSON: nested too deeply", source=source, line=line) from None
    try:
        return document_from_audit_event(event)
    except InputError as error:
        raise InputError(error.reason, source=source, line=line) from None
