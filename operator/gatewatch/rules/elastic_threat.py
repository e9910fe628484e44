"""Elastic's ``[[rule.threat]]`` -> gatewatch's ``threat``, normalized against the
shipped ATT&CK table, never failing an import.

Elastic's rules are written by hand and drift from ATT&CK: a sub-technique id
in the technique slot (``T1552.007``), a reference URL that points at another
technique, a tactic renamed in a newer ATT&CK, an id ATT&CK revoked. Each is
fixed where the fix is certain and said in a warning; nothing here raises:

===============================================  =====================================================
Elastic wrote                                    gatewatch imports
===============================================  =====================================================
sub-technique id as a technique                  its technique, with the sub-technique under it
sub-technique under another technique            moved under its own technique
revoked id                                       the id that replaced it (and ATT&CK's name for it)
deprecated id, or one newer than the table       kept as written (with Elastic's name)
a name other than ATT&CK's                       Elastic's name kept (lint points it out too)
a reference that is not the id's ATT&CK page     ATT&CK's page of the id
malformed entry, other framework, unnamed        left out
unknown id
===============================================  =====================================================
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gatewatch.errors import quoted
from gatewatch.rules.attack import (
    AttackData,
    Status,
    attack_data,
    is_subtechnique_id,
    is_tactic_id,
    is_technique_id,
    tactic_reference,
    technique_reference,
)
from gatewatch.rules.model import ATTACK_FRAMEWORK

_REFERENCE_ID = re.compile(r"attack\.mitre\.org/(?:techniques/(T\d{4})(?:/(\d{3}))?|tactics/(TA\d{4}))", re.IGNORECASE)


def normalize_threat(raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Elastic's threat array -> (our threat entries, warnings about what was changed or left out)."""
    return _Normalizer(attack_data()).threats(raw)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _pointed_at(reference: str) -> str | None:
    match = _REFERENCE_ID.search(reference)
    if match is None:
        return None
    if match.group(3):
        return match.group(3).upper()
    return match.group(1).upper() + (f".{match.group(2)}" if match.group(2) else "")


class _Normalizer:
    def __init__(self, data: AttackData) -> None:
        self.data = data
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def threats(self, raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
        if raw is None:
            return [], []
        if not isinstance(raw, list):
            self.warn("[[rule.threat]] is not an array of tables: the ATT&CK mapping is left out")
            return [], self.warnings
        threats: list[dict[str, Any]] = []
        for entry in raw:
            threat = self.threat(entry)
            if threat is None:
                continue
            same_tactic = next((t for t in threats if t["tactic"]["id"] == threat["tactic"]["id"]), None)
            if same_tactic is None:
                threats.append(threat)
            else:  # one tactic twice: one entry, techniques merged
                for technique in threat.get("techniques", []):
                    self._add_technique(same_tactic.setdefault("techniques", []), technique)
        return threats, self.warnings

    def threat(self, entry: Any) -> dict[str, Any] | None:
        if not isinstance(entry, Mapping):
            self.warn("a [[rule.threat]] entry is not a table: left out")
            return None
        framework = entry.get("framework", ATTACK_FRAMEWORK)
        if framework != ATTACK_FRAMEWORK:
            self.warn(f"threat framework {quoted(framework)} is not imported (only {ATTACK_FRAMEWORK})")
            return None
        tactic = self.tactic(entry.get("tactic"))
        if tactic is None:
            return None
        techniques: list[dict[str, Any]] = []
        raw_techniques = entry.get("technique") or []
        if not isinstance(raw_techniques, list):
            self.warn(f"the techniques of tactic {tactic['id']} are not an array of tables: left out")
            raw_techniques = []
        for raw_technique in raw_techniques:
            for technique in self.technique(raw_technique):
                self._add_technique(techniques, technique)
        threat: dict[str, Any] = {"framework": ATTACK_FRAMEWORK, "tactic": tactic}
        if techniques:
            threat["techniques"] = techniques
        return threat

    # -- tactics

    def tactic(self, raw: Any) -> dict[str, str] | None:
        if not isinstance(raw, Mapping):
            self.warn("a threat entry without a tactic: left out")
            return None
        attack_id, name = _text(raw.get("id")), _text(raw.get("name"))
        if attack_id is None or not is_tactic_id(attack_id.upper()):
            by_name = self.data.tactic_named(name) if name else None
            if by_name is None:
                self.warn(f"tactic id {quoted(raw.get('id'))} is not an ATT&CK tactic id: its threat entry is left out")
                return None
            self.warn(f"tactic id {quoted(raw.get('id'))} is not an ATT&CK tactic id: {by_name.id} {by_name.name} by its name")
            attack_id = by_name.id
        attack_id = attack_id.upper()
        entry = self.data.tactic(attack_id)
        if entry is None:
            if name is None:
                self.warn(f"tactic {attack_id} is not in ATT&CK Enterprise v{self.data.version} and has no name: left out")
                return None
            self.warn(f"tactic {attack_id} ({name}) is not in ATT&CK Enterprise v{self.data.version}: kept as written")
        elif name is None:
            name = entry.name
        elif not entry.accepts_name(name):
            self.warn(f"{attack_id} is named {entry.name!r} in ATT&CK Enterprise v{self.data.version}, not {quoted(name)}: "
                      "Elastic's name kept")
        reference = tactic_reference(attack_id)
        self._check_reference(raw.get("reference"), attack_id, reference)
        return {"id": attack_id, "name": name, "reference": reference}

    # -- techniques

    def technique(self, raw: Any) -> list[dict[str, Any]]:
        """One of Elastic's technique tables -> the technique entries it stands for (0, 1, or more
        when its sub-techniques belong to other techniques)."""
        if not isinstance(raw, Mapping):
            self.warn("a technique entry is not a table: left out")
            return []
        subs = [sub for item in self._list(raw.get("subtechnique"), "sub-techniques") if (sub := self.item(item))]
        written = self.item(raw)
        results: list[dict[str, Any]] = []
        if written is not None:
            if "." in written["id"]:  # a sub-technique in the technique slot
                parent_id = written["id"].split(".")[0]
                self.warn(f"{written['id']} is a sub-technique: imported under its technique {parent_id}")
                subs.insert(0, written)
            else:
                results.append(written)
        for sub in subs:
            if "." not in sub["id"]:  # a sub-technique revoked in favour of a technique
                if all(t["id"] != sub["id"] for t in results):
                    results.append(sub)
                continue
            parent_id = sub["id"].split(".")[0]
            if written is not None and "." not in written["id"] and parent_id != written["id"]:
                self.warn(f"sub-technique {sub['id']} does not belong to {written['id']}: imported under {parent_id}")
            parent = next((t for t in results if t["id"] == parent_id), None)
            if parent is None:
                parent = self._parent(parent_id)
                results.append(parent)
            self._add_sub(parent, sub)
        return results

    def item(self, raw: Any) -> dict[str, str] | None:
        """A technique or sub-technique id resolved: current, revoked -> replacement, else as written."""
        if not isinstance(raw, Mapping):
            self.warn("a technique entry is not a table: left out")
            return None
        attack_id, name = _text(raw.get("id")), _text(raw.get("name"))
        if attack_id is None or not (is_technique_id(attack_id.upper()) or is_subtechnique_id(attack_id.upper())):
            self.warn(f"technique id {quoted(raw.get('id'))} is not an ATT&CK technique id: left out")
            return None
        attack_id = attack_id.upper()
        resolution = self.data.resolve_technique(attack_id)
        if resolution.status is Status.REVOKED and resolution.entry is not None:
            self.warn(f"{resolution.describe(self.data.version)}: imported as {resolution.entry.id}")
            self._check_reference(raw.get("reference"), attack_id, technique_reference(attack_id), quiet=True)
            return {"id": resolution.entry.id, "name": resolution.entry.name, "reference": resolution.entry.reference}
        if resolution.status is Status.CURRENT and resolution.entry is not None:
            if name is None or name.casefold() == self._display_name(attack_id).casefold():
                name = resolution.entry.name
            elif not resolution.entry.accepts_name(name):
                self.warn(f"{attack_id} is named {resolution.entry.name!r} in ATT&CK Enterprise v{self.data.version}, "
                          f"not {quoted(name)}: Elastic's name kept")
        else:
            name = name or resolution.old_name
            if name is None:
                self.warn(f"{resolution.describe(self.data.version)} and has no name: left out")
                return None
            self.warn(f"{resolution.describe(self.data.version)}: kept as written")
        reference = technique_reference(attack_id)
        self._check_reference(raw.get("reference"), attack_id, reference)
        return {"id": attack_id, "name": name, "reference": reference}

    def _display_name(self, attack_id: str) -> str:
        """ATT&CK's "Technique: Sub-technique" form of a sub-technique's name (Elastic writes it so)."""
        entry = self.data.technique(attack_id)
        parent = self.data.technique(attack_id.split(".")[0]) if "." in attack_id else None
        return f"{parent.name}: {entry.name}" if entry is not None and parent is not None else ""

    def _parent(self, parent_id: str) -> dict[str, Any]:
        entry = self.data.technique(parent_id)
        name = entry.name if entry is not None else parent_id
        return {"id": parent_id, "name": name, "reference": technique_reference(parent_id)}

    def _list(self, raw: Any, what: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.warn(f"{what} are not an array of tables: left out")
            return []
        return raw

    def _check_reference(self, written: Any, attack_id: str, reference: str, *, quiet: bool = False) -> None:
        if written is None or (isinstance(written, str) and written.strip().rstrip("/") == reference.rstrip("/")):
            return
        if quiet:
            return
        pointed = _pointed_at(written) if isinstance(written, str) else None
        if pointed is not None and pointed != attack_id:
            self.warn(f"the reference of {attack_id} points at {pointed} ({quoted(written)}): ATT&CK's page of {attack_id} used")
        else:
            self.warn(f"the reference of {attack_id} is {quoted(written)}, not ATT&CK's page of it: {reference} used")

    # -- merging

    @staticmethod
    def _add_sub(technique: dict[str, Any], sub: dict[str, str]) -> None:
        subs = technique.setdefault("subtechniques", [])
        if all(existing["id"] != sub["id"] for existing in subs):
            subs.append(sub)

    def _add_technique(self, techniques: list[dict[str, Any]], technique: dict[str, Any]) -> None:
        existing = next((t for t in techniques if t["id"] == technique["id"]), None)
        if existing is None:
            techniques.append(technique)
            return
        for sub in technique.get("subtechniques", []):
            self._add_sub(existing, sub)
