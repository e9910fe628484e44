"""The chart's namespaces.guardLabels policy, evaluated as the API server would (CEL via cel-python).

A tenant who may label their own namespace must not be able to loosen gatewatch there:
not through gatewatch.io/* labels, and not by changing a label a mode selector reads
(`env=prod -> enforce`: relabelling env=dev would drop the namespace to the default).
"""
from __future__ import annotations

from typing import Any

import celpy
import pytest

from test_chart import render

SELECTORS = [
    {"matchLabels": {"env": "prod"}, "mode": "enforce"},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments"]}], "mode": "enforce"},
]


def label_policy(selectors: list[dict[str, Any]]) -> dict[str, Any]:
    objects = render({"namespaces": {"guardLabels": {"enabled": True}, "selectors": selectors}})
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy" and "labels" in o["metadata"]["name"]]
    return policy["spec"]


def admitted(spec: dict[str, Any], old: dict[str, str], new: dict[str, str], *, groups: list[str]) -> bool:
    """What the API server decides for a namespace UPDATE from old to new labels."""
    environment = celpy.Environment()

    def evaluate(expression: str, activation: dict[str, Any]) -> Any:
        value = environment.program(environment.compile(expression)).evaluate(activation)
        assert not isinstance(value, celpy.CELEvalError), value
        return value

    activation: dict[str, Any] = {
        "object": celpy.json_to_cel({"metadata": {"name": "team-a", "labels": new}}),
        "oldObject": celpy.json_to_cel({"metadata": {"name": "team-a", "labels": old}}),
        "request": celpy.json_to_cel({"operation": "UPDATE", "userInfo": {"username": "tenant", "groups": groups}}),
    }
    if not all(bool(evaluate(c["expression"], activation)) for c in spec["matchConditions"]):
        return True  # an allowed group: the policy does not apply
    activation["variables"] = celpy.celtypes.MapType(
        {celpy.celtypes.StringType(v["name"]): evaluate(v["expression"], activation) for v in spec["variables"]})
    return all(bool(evaluate(v["expression"], activation)) for v in spec["validations"])


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ({"env": "prod"}, {"env": "dev"}, False),                    # out of the enforce selector
    ({"env": "prod"}, {}, False),                                # removing it, too
    ({"team": "payments"}, {"team": "web"}, False),              # a matchExpressions key
    ({}, {"gatewatch.io/ignore": "true"}, False),                # opting out
    ({"env": "prod"}, {"env": "prod", "owner": "bob"}, True),    # other labels stay the tenant's
    ({"env": "prod", "owner": "bob"}, {"env": "prod"}, True),
])
def test_tenants_cannot_change_the_labels_modes_depend_on(old, new, allowed):
    assert admitted(label_policy(SELECTORS), old, new, groups=["team-a"]) is allowed


def test_the_platform_team_can():
    assert admitted(label_policy(SELECTORS), {"env": "prod"}, {"env": "dev"}, groups=["system:masters"])


def test_without_selectors_only_gatewatch_labels_are_guarded():
    spec = label_policy([])
    assert admitted(spec, {"env": "prod"}, {"env": "dev"}, groups=["team-a"])
    assert not admitted(spec, {}, {"gatewatch.io/ignore": "true"}, groups=["team-a"])
