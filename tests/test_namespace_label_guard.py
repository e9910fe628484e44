"""The chart's namespaces.guardLabels policy, evaluated as the API server would (CEL via cel-python).

A tenant who may label their own namespace must not be able to loosen gatewatch there:
not through gatewatch.io/* labels (gatewatch.io/mode may only go up), and not by changing a
label a mode selector reads (`env=prod -> enforce`: relabelling env=dev would move the namespace
from the enforce webhook entry, which fails closed, to one that fails open). The policy is on by
default wherever the cluster serves ValidatingAdmissionPolicy v1.
"""
from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy import celtypes

from test_chart import SERVES_ADMISSION_POLICIES, render

SELECTORS = [
    {"matchLabels": {"env": "prod"}, "mode": "enforce"},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments"]}], "mode": "enforce"},
]
POLICY_UPDATE = ("admissionregistration.k8s.io", "validatingadmissionpolicies", "gatewatch-namespace-labels", "update")


def label_policy(selectors: list[dict[str, Any]] | None = None, **namespaces: Any) -> dict[str, Any]:
    objects = render({"namespaces": {"selectors": selectors or [], **namespaces}},
                     api_versions=SERVES_ADMISSION_POLICIES)
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy" and "labels" in o["metadata"]["name"]]
    return policy["spec"]


def authorizer(permissions: set[tuple[str, str, str, str]]) -> dict[str, Any]:
    """kube-apiserver's CEL ``authorizer`` (group().resource().name().check().allowed()), answering from
    ``permissions``, (group, resource, name, verb) tuples, as RBAC would for the requesting user."""

    def step(kind: str):
        def call(target: celtypes.MapType, value: celtypes.StringType) -> celtypes.MapType:
            return celtypes.MapType({**target, celtypes.StringType(kind): value})
        return call

    def allowed(target: celtypes.MapType) -> celtypes.BoolType:
        asked = tuple(str(target.get(celtypes.StringType(kind), "")) for kind in ("group", "resource", "name", "verb"))
        return celtypes.BoolType(asked in permissions)

    return {"group": step("group"), "resource": step("resource"), "name": step("name"), "check": step("verb"),
            "allowed": allowed}


def admitted(spec: dict[str, Any], old: dict[str, str] | None, new: dict[str, str], *, groups: list[str],
             permissions: set[tuple[str, str, str, str]] = frozenset()) -> bool:
    """What the API server decides for a namespace UPDATE from old to new labels (CREATE when old is None)."""
    environment = celpy.Environment()
    functions = authorizer(set(permissions))

    def evaluate(expression: str, activation: dict[str, Any]) -> Any:
        program = environment.program(environment.compile(expression), functions=functions)
        value = program.evaluate(activation)
        assert not isinstance(value, celpy.CELEvalError), value
        return value

    activation: dict[str, Any] = {
        "object": celpy.json_to_cel({"metadata": {"name": "team-a", "labels": new}}),
        "oldObject": celpy.json_to_cel(None if old is None else {"metadata": {"name": "team-a", "labels": old}}),
        "request": celpy.json_to_cel({"operation": "CREATE" if old is None else "UPDATE",
                                      "userInfo": {"username": "tenant", "groups": groups}}),
        "authorizer": celtypes.MapType({}),
    }
    if not all(bool(evaluate(c["expression"], activation)) for c in spec["matchConditions"]):
        return True  # an allowed subject: the policy does not apply
    variables: dict[Any, Any] = {}
    for variable in spec["variables"]:  # in order: a variable may use the ones before it
        activation["variables"] = celtypes.MapType(variables)
        variables[celtypes.StringType(variable["name"])] = evaluate(variable["expression"], activation)
    activation["variables"] = celtypes.MapType(variables)
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


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ({}, {"gatewatch.io/mode": "enforce"}, True),                                  # opting in
    ({"gatewatch.io/mode": "warn"}, {"gatewatch.io/mode": "enforce"}, True),
    (None, {"gatewatch.io/mode": "audit"}, True),                                  # a new namespace
    ({"gatewatch.io/mode": "enforce"}, {"gatewatch.io/mode": "warn"}, False),      # out of the Fail entry
    ({"gatewatch.io/mode": "enforce"}, {}, False),
    ({"gatewatch.io/mode": "warn"}, {"gatewatch.io/mode": "off"}, False),
    ({}, {"gatewatch.io/mode": "Enforce"}, False),                                 # not a mode
    ({"gatewatch.io/mode": "enforce"}, {"gatewatch.io/mode": "enforce", "a": "b"}, True),
])
def test_tenants_may_only_raise_the_mode_label(old, new, allowed):
    assert admitted(label_policy(), old, new, groups=["team-a"]) is allowed


def test_protected_labels_are_guarded_like_selector_keys():
    spec = label_policy(protectedLabels=["tier"])
    assert not admitted(spec, {"tier": "prod"}, {"tier": "sandbox"}, groups=["team-a"])
    assert admitted(label_policy(), {"tier": "prod"}, {"tier": "sandbox"}, groups=["team-a"])


def test_the_platform_team_can():
    spec = label_policy(SELECTORS)
    assert admitted(spec, {"env": "prod"}, {"env": "dev"}, groups=["system:masters"])
    # A cluster admin in any group (kubeadm:cluster-admins, a cloud IAM admin): whoever may update the policy.
    assert admitted(spec, {"gatewatch.io/mode": "enforce"}, {}, groups=["kubeadm:cluster-admins"],
                    permissions={POLICY_UPDATE})
    assert not admitted(spec, {"gatewatch.io/mode": "enforce"}, {}, groups=["kubeadm:cluster-admins"],
                        permissions={("admissionregistration.k8s.io", "validatingadmissionpolicies",
                                      "gatewatch-namespace-labels", "get")})


def test_without_selectors_only_gatewatch_labels_are_guarded():
    spec = label_policy([])
    assert admitted(spec, {"env": "prod"}, {"env": "dev"}, groups=["team-a"])
    assert not admitted(spec, {}, {"gatewatch.io/ignore": "true"}, groups=["team-a"])
