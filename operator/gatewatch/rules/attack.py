"""MITRE ATT&CK data shipped with gatewatch (``data/attack.json``), so rule
tactics and techniques are checked offline.

The data holds every Enterprise tactic and the techniques the Containers and
Kubernetes matrices (and Elastic's Kubernetes rules) use. ``former_names``
keeps names earlier ATT&CK versions used (TA0005 "Defense Evasion" is
"Stealth" since v18): rules written against either version load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class AttackEntry:
    id: str
    name: str
    reference: str
    former_names: tuple[str, ...] = ()

    @property
    def accepted_names(self) -> tuple[str, ...]:
        return (self.name, *self.former_names)

    def accepts_name(self, name: str) -> bool:
        folded = name.strip().casefold()
        return any(folded == accepted.casefold() for accepted in self.accepted_names)


@dataclass(frozen=True, slots=True)
class AttackData:
    framework: str
    tactics: dict[str, AttackEntry]
    techniques: dict[str, AttackEntry]  # sub-techniques too, keyed "T1053.007"

    def tactic(self, tactic_id: str) -> AttackEntry | None:
        return self.tactics.get(tactic_id.strip().upper())

    def technique(self, technique_id: str) -> AttackEntry | None:
        return self.techniques.get(technique_id.strip().upper())


def _entries(raw: list[dict]) -> dict[str, AttackEntry]:
    return {
        item["id"]: AttackEntry(
            id=item["id"],
            name=item["name"],
            reference=item["reference"],
            former_names=tuple(item.get("former_names", ())),
        )
        for item in raw
    }


@cache
def attack_data() -> AttackData:
    """The shipped ATT&CK data, read once."""
    text = resources.files("gatewatch").joinpath("data/attack.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    return AttackData(
        framework=raw["framework"],
        tactics=_entries(raw["tactics"]),
        techniques=_entries(raw["techniques"]),
    )
