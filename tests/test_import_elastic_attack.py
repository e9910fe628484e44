"""import-elastic never fails a rule over its ATT&CK metadata: what Elastic writes is
normalized against the shipped ATT&CK table, and every change is a warning."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gatewatch.cli import main
from gatewatch.rules import load_rules_text
from gatewatch.rules.elastic_import import convert_elastic_rule, import_elastic_rules, render_rules_yaml

FIXTURES = Path(__file__).parent / "data" / "elastic"
EXEC_RULE = tomllib.loads((FIXTURES / "query_user_exec_to_pod.toml").read_text())


def tactic(attack_id: str, name: str) -> dict[str, str]:
    return {"id": attack_id, "name": name, "reference": f"https://attack.mitre.org/tactics/{attack_id}/"}


def technique(attack_id: str, name: str, *, reference: str | None = None, subs: list | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": attack_id, "name": name,
        "reference": reference or f"https://attack.mitre.org/techniques/{attack_id.replace('.', '/')}/",
    }
    if subs is not None:
        item["subtechnique"] = subs
    return item


def convert(threat: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Convert the exec rule with ``threat``; the result must load."""
    data = copy.deepcopy(EXEC_RULE)
    data["rule"]["threat"] = threat
    rule, warnings = convert_elastic_rule(data, file="t.toml")
    (loaded,) = load_rules_text(render_rules_yaml([rule])).rules
    assert loaded.id == rule["id"]
    return rule.get("threat", []), warnings


def entry(tactic_item: dict, techniques: list) -> dict[str, Any]:
    return {"framework": "MITRE ATT&CK", "tactic": tactic_item, "technique": techniques}


def test_a_subtechnique_in_the_technique_slot_becomes_technique_and_subtechnique():
    # credential_access_kubernetes_secrets.toml, as Elastic publishes it
    threat, warnings = convert([entry(tactic("TA0006", "Credential Access"),
                                      [technique("T1552.007", "Unsecured Credentials: Container API")])])
    assert threat[0]["techniques"] == [{
        "id": "T1552", "name": "Unsecured Credentials", "reference": "https://attack.mitre.org/techniques/T1552/",
        "subtechniques": [{"id": "T1552.007", "name": "Container API",
                           "reference": "https://attack.mitre.org/techniques/T1552/007/"}],
    }]
    assert warnings == ["T1552.007 is a sub-technique: imported under its technique T1552"]


def test_the_same_subtechnique_twice_is_merged_under_one_technique():
    threat, _ = convert([entry(tactic("TA0006", "Credential Access"), [
        technique("T1552", "Unsecured Credentials", subs=[technique("T1552.007", "Container API")]),
        technique("T1552.007", "Container API"),
    ])])
    assert [(t["id"], [s["id"] for s in t["subtechniques"]]) for t in threat[0]["techniques"]] == [("T1552", ["T1552.007"])]


def test_a_reference_pointing_at_another_technique_is_a_warning_and_attacks_page_is_used():
    # persistence_anonymous_user_bound_to_clusterrole.toml: T1098 with T1133's URL
    threat, warnings = convert([entry(tactic("TA0003", "Persistence"), [
        technique("T1098", "Account Manipulation", reference="https://attack.mitre.org/techniques/T1133/")
    ])])
    assert threat[0]["techniques"][0]["reference"] == "https://attack.mitre.org/techniques/T1098/"
    assert warnings == [
        "the reference of T1098 points at T1133 ('https://attack.mitre.org/techniques/T1133/'): ATT&CK's page of T1098 used"
    ]


@pytest.mark.parametrize(("technique_id", "name"), [
    ("T1055", "Process Injection"), ("T1565", "Data Manipulation"), ("T1546", "Event Triggered Execution"),
])
def test_techniques_outside_the_old_subset_import_without_a_warning(technique_id, name):
    threat, warnings = convert([entry(tactic("TA0004", "Privilege Escalation"), [technique(technique_id, name)])])
    assert threat[0]["techniques"][0]["id"] == technique_id and warnings == []


def test_a_revoked_id_becomes_its_replacement():
    threat, warnings = convert([entry(tactic("TA0002", "Execution"), [technique("T1086", "PowerShell")])])
    assert threat[0]["techniques"] == [{
        "id": "T1059", "name": "Command and Scripting Interpreter", "reference": "https://attack.mitre.org/techniques/T1059/",
        "subtechniques": [{"id": "T1059.001", "name": "PowerShell", "reference": "https://attack.mitre.org/techniques/T1059/001/"}],
    }]
    assert warnings[0] == "T1086 (PowerShell) was revoked in ATT&CK; it is now T1059.001 PowerShell: imported as T1059.001"


def test_unknown_and_deprecated_ids_are_kept_as_written_with_a_warning():
    threat, warnings = convert([entry(tactic("TA0005", "Stealth"), [
        technique("T1999", "A Technique From A Newer ATT&CK"), technique("T1064", "Scripting"),
    ])])
    assert threat[0]["tactic"]["name"] == "Stealth"
    assert [(t["id"], t["name"]) for t in threat[0]["techniques"]] == [
        ("T1999", "A Technique From A Newer ATT&CK"), ("T1064", "Scripting"),
    ]
    assert warnings == [
        "TA0005 is named 'Defense Evasion' in ATT&CK Enterprise v18.1, not 'Stealth': Elastic's name kept",
        "T1999 is not in ATT&CK Enterprise v18.1: kept as written",
        "T1064 (Scripting) is deprecated in ATT&CK (no replacement): kept as written",
    ]


def test_what_cannot_be_placed_is_left_out_with_a_warning_and_the_rule_still_imports():
    threat, warnings = convert([
        entry(tactic("TA0002", "Execution"), [{"id": "T1999"}, {"id": "not-an-id", "name": "x"}, "text"]),
        {"framework": "MITRE ATT&CK", "technique": [technique("T1609", "Container Administration Command")]},
        {"framework": "Other Framework", "tactic": tactic("TA0002", "Execution")},
    ])
    assert threat == [{"framework": "MITRE ATT&CK", "tactic": tactic("TA0002", "Execution")}]
    assert warnings == [
        "T1999 is not in ATT&CK Enterprise v18.1 and has no name: left out",
        "technique id 'not-an-id' is not an ATT&CK technique id: left out",
        "a technique entry is not a table: left out",
        "a threat entry without a tactic: left out",
        "threat framework 'Other Framework' is not imported (only MITRE ATT&CK)",
    ]
    _, warnings = convert("not a list")
    assert warnings == ["[[rule.threat]] is not an array of tables: the ATT&CK mapping is left out"]


def test_a_tactic_id_that_is_not_one_is_found_by_its_name():
    threat, warnings = convert([entry({"id": "Execution", "name": "Execution"}, [])])
    assert threat[0]["tactic"]["id"] == "TA0002"
    assert warnings == ["tactic id 'Execution' is not an ATT&CK tactic id: TA0002 Execution by its name"]


# --- the command -----------------------------------------------------------------------------


def test_import_elastic_exits_0_with_warnings_on_stderr(tmp_path):
    text = (FIXTURES / "query_user_exec_to_pod.toml").read_text().replace(
        'reference = "https://attack.mitre.org/techniques/T1609/"', 'reference = "https://attack.mitre.org/techniques/T1610/"'
    )
    assert "T1610" in text
    path = tmp_path / "exec.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["rules", "import-elastic", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: warning: the reference of T1609 points at T1610" in result.stderr
    assert "14de811c-d60f-11ec-9fd7-f661ea17fbce" in result.stdout


def test_import_elastic_exits_1_naming_the_rule_it_could_not_convert(tmp_path):
    endpoint = tmp_path / "endpoint.toml"
    endpoint.write_text(
        '[rule]\nrule_id = "e1"\nname = "Tool in Container"\ndescription = "d"\nseverity = "low"\nrisk_score = 21\n'
        'type = "eql"\nlanguage = "eql"\nindex = ["logs-endpoint.events.process*"]\n'
        "query = '''\nprocess where event.type == \"start\" and process.name == \"nmap\"\n'''\n"
    )
    result = CliRunner().invoke(main, ["rules", "import-elastic", str(FIXTURES / "query_user_exec_to_pod.toml"), str(endpoint)])
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(str(endpoint))]
    assert line == (
        f"{endpoint}: endpoint-data rule (EQL 'process where'): it needs process events from Elastic Defend for "
        "Containers (logs-endpoint.events.process*), not Kubernetes audit logs, which are all gatewatch sees"
    )
    assert "14de811c-d60f-11ec-9fd7-f661ea17fbce" in result.stdout  # the others are still converted


def test_the_warnings_are_in_the_import_result_per_file(tmp_path):
    result = import_elastic_rules([FIXTURES / "query_user_exec_to_pod.toml"])
    assert result.warnings == [] and result.failures == []
