"""MITRE ATT&CK® Enterprise, as shipped with gatewatch (``data/attack-enterprise.json``),
so rule tactics and techniques are checked offline.

The table is the whole Enterprise matrix of one ATT&CK version: every tactic,
technique and sub-technique with its name, generated from MITRE's STIX data by
``scripts/generate_attack_table.py`` (never edited by hand). Ids that ATT&CK
revoked or deprecated are not current entries, but are kept so a rule written
against an older ATT&CK still resolves: a revoked id to the id that replaced
it, a deprecated one to its old name. ATT&CK is © The MITRE Corporation, used
under the ATT&CK Terms of Use (docs/attack.md).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any

TABLE_RESOURCE = "data/attack-enterprise.json"
_TACTIC_ID = re.compile(r"^TA\d{4}$")
_TECHNIQUE_ID = re.compile(r"^T\d{4}$")
_SUBTECHNIQUE_ID = re.compile(r"^T\d{4}\.\d{3}$")


def tactic_reference(tactic_id: str) -> str:
    """ATT&CK's page of a tactic, as Elastic's rules write it."""
    return f"https://attack.mitre.org/tactics/{tactic_id}/"


def technique_reference(technique_id: str) -> str:
    """ATT&CK's page of a technique or sub-technique (``T1552.007`` -> ``.../T1552/007/``)."""
    return f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/"


def is_tactic_id(value: str) -> bool:
    return bool(_TACTIC_ID.match(value))


def is_technique_id(value: str) -> bool:
    return bool(_TECHNIQUE_ID.match(value))


def is_subtechnique_id(value: str) -> bool:
    return bool(_SUBTECHNIQUE_ID.match(value))


@dataclass(frozen=True, slots=True)
class AttackEntry:
    """A current tactic, technique or sub-technique."""

    id: str
    name: str
    reference: str
    tactics: tuple[str, ...] = ()  # techniques: the ids of the tactics they serve

    def accepts_name(self, name: str) -> bool:
        return name.strip().casefold() == self.name.casefold()


class Status(str, Enum):
    CURRENT = "current"
    REVOKED = "revoked"  # replaced by another id
    DEPRECATED = "deprecated"  # withdrawn, no replacement
    UNKNOWN = "unknown"  # not in this ATT&CK version (a typo, or a newer version)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an id written in a rule is in the shipped ATT&CK version."""

    id: str
    status: Status
    entry: AttackEntry | None = None  # current: the entry; revoked: the replacement's
    old_name: str | None = None  # revoked or deprecated: the name it had

    def describe(self, version: str) -> str:
        """One phrase for a warning: why this id is not simply current."""
        if self.status is Status.REVOKED and self.entry is not None:
            return f"{self.id} ({self.old_name}) was revoked in ATT&CK; it is now {self.entry.id} {self.entry.name}"
        if self.status is Status.DEPRECATED:
            return f"{self.id} ({self.old_name}) is deprecated in ATT&CK (no replacement)"
        return f"{self.id} is not in ATT&CK Enterprise v{version}"


@dataclass(frozen=True, slots=True)
class AttackData:
    version: str  # the ATT&CK version, e.g. "18.1"
    tactics: dict[str, AttackEntry]  # in matrix order
    techniques: dict[str, AttackEntry]  # techniques and sub-techniques ("T1053.007")
    revoked: dict[str, tuple[str, str]]  # old id -> (old name, replacing id)
    deprecated: dict[str, str]  # id -> name
    attribution: dict[str, str]

    def tactic(self, tactic_id: str) -> AttackEntry | None:
        return self.tactics.get(tactic_id.strip().upper())

    def technique(self, technique_id: str) -> AttackEntry | None:
        """A current technique or sub-technique (None for revoked, deprecated and unknown ids)."""
        return self.techniques.get(technique_id.strip().upper())

    def tactic_named(self, name: str) -> AttackEntry | None:
        folded = name.strip().casefold()
        return next((entry for entry in self.tactics.values() if entry.name.casefold() == folded), None)

    def resolve_technique(self, technique_id: str) -> Resolution:
        """Current, revoked (with the replacing entry), deprecated or unknown."""
        attack_id = technique_id.strip().upper()
        entry = self.techniques.get(attack_id)
        if entry is not None:
            return Resolution(attack_id, Status.CURRENT, entry)
        if attack_id in self.revoked:
            old_name, by = self.revoked[attack_id]
            return Resolution(attack_id, Status.REVOKED, self.techniques.get(by), old_name)
        if attack_id in self.deprecated:
            return Resolution(attack_id, Status.DEPRECATED, None, self.deprecated[attack_id])
        return Resolution(attack_id, Status.UNKNOWN)

    @property
    def subtechnique_count(self) -> int:
        return sum("." in attack_id for attack_id in self.techniques)


def _techniques(raw: dict[str, Any]) -> dict[str, AttackEntry]:
    return {
        attack_id: AttackEntry(attack_id, item["name"], technique_reference(attack_id), tuple(item["tactics"]))
        for section in ("techniques", "subtechniques")
        for attack_id, item in raw[section].items()
    }


@cache
def attack_data() -> AttackData:
    """The shipped ATT&CK table, read once."""
    raw = json.loads(resources.files("gatewatch").joinpath(TABLE_RESOURCE).read_text(encoding="utf-8"))
    return AttackData(
        version=raw["version"],
        tactics={
            attack_id: AttackEntry(attack_id, item["name"], tactic_reference(attack_id))
            for attack_id, item in raw["tactics"].items()
        },
        techniques=_techniques(raw),
        revoked={attack_id: (item["name"], item["by"]) for attack_id, item in raw["revoked"].items() if "by" in item},
        # a revoked id whose replacement is gone is, for a rule, as good as deprecated
        deprecated={
            **{attack_id: item["name"] for attack_id, item in raw["revoked"].items() if "by" not in item},
            **{attack_id: item["name"] for attack_id, item in raw["deprecated"].items()},
        },
        attribution=dict(raw["attribution"]),
    )
