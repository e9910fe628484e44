"""What differs between the desired and the live configuration (pure)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Change:
    """One difference between the desired and the live configuration."""

    webhook: str | None  # the webhook entry's name; None for the whole configuration
    field: str  # e.g. "failurePolicy", "clientConfig", "<entry>" (added/removed), "<configuration>"
    expected: Any
    found: Any

    @property
    def where(self) -> str:
        """``entry.field``, or the field alone for the whole configuration."""
        return self.field if self.webhook is None else f"{self.webhook}.{self.field}"

    def as_dict(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "field": self.field,
                "expected": _short(self.expected), "found": _short(self.found)}


def diff_webhook_configuration(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[Change]:
    """What differs, per webhook entry and field; extra fields in a live entry count too.

    Only ``webhooks`` is compared (metadata is the API server's and other tools').
    """
    if live is None:
        return [Change(webhook=None, field="<configuration>", expected="present", found="missing")]
    changes: list[Change] = []
    desired_entries = {entry["name"]: entry for entry in desired.get("webhooks") or []}
    live_entries = {entry.get("name"): entry for entry in live.get("webhooks") or [] if isinstance(entry, Mapping)}
    for name, entry in desired_entries.items():
        live_entry = live_entries.get(name)
        if live_entry is None:
            changes.append(Change(webhook=name, field="<entry>", expected="present", found="missing"))
            continue
        for key, value in entry.items():
            if live_entry.get(key) != value:
                changes.append(Change(webhook=name, field=key, expected=value, found=live_entry.get(key)))
        for key in sorted(set(live_entry) - set(entry)):
            # e.g. matchConditions added to exempt requests: as much a bypass as a changed selector.
            changes.append(Change(webhook=name, field=key, expected=None, found=live_entry[key]))
    for name in live_entries.keys() - desired_entries.keys():
        changes.append(Change(webhook=str(name), field="<entry>", expected="missing", found="present"))
    return changes


def _short(value: Any) -> Any:
    # caBundles are kilobytes of base64: log a digest, enough to tell two apart.
    if isinstance(value, str) and len(value) > 120:
        return f"sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    if isinstance(value, dict) and "caBundle" in value:
        return {**value, "caBundle": _short(value["caBundle"])}
    return value
