"""The chart's namespaces.guardLabels policy, evaluated as the API server would (CEL via cel-python).

A tenant who may label their own namespace must not be able to loosen gatewatch there:
not through gatewatch.io/* labels (gatewatch.io/mode may only go up), and not by changing a
label a mode selector reads (`env=prod -> enforce`: relabelling env=dev would move the namespace
from the enforce webhook entry, which fails closed, to one that fails open). The policy is on by
default wherever the cluster serves ValidatingAdmissionPolicy v1.
"""
from __future__ import annotations

import functools
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


ENVIRONMENT = celpy.Environment()


@functools.lru_cache(maxsize=None)
def _program(expression: str, permissions: frozenset[tuple[str, str, str, str]]) -> Any:
    return ENVIRONMENT.program(ENVIRONMENT.compile(expression), functions=authorizer(set(permissions)))


def admitted(spec: dict[str, Any], old: dict[str, str] | None, new: dict[str, str], *, groups: list[str],
             permissions: set[tuple[str, str, str, str]] = frozenset()) -> bool:
    """What the API server decides for a namespace UPDATE from old to new labels (CREATE when old is None)."""
    def evaluate(expression: str, activation: dict[str, Any]) -> Any:
        value = _program(expression, frozenset(permissions)).evaluate(activation)
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


def test_no_label_change_a_tenant_may_make_lowers_the_mode_or_leaves_the_fail_closed_entry():
    """The guard and the mode rule together: whatever a tenant may relabel, the namespace's mode
    (and so its webhook entry) never goes down; checked on generated label changes."""
    import itertools
    import random

    from apiserver_harness import label_selector_matches
    from gatewatch.config import load_settings
    from gatewatch.namespace_modes import ModePolicy

    namespaces = {"selectors": [{"matchLabels": {"tier": "sandbox"}, "mode": "audit"},
                                {"matchLabels": {"env": "prod"}, "mode": "enforce"},
                                {"matchLabels": {"lab": "yes"}, "mode": "off"}],
                  "protectedLabels": ["lab"], "ignoreLabel": True}
    rule = ModePolicy.from_settings(load_settings(environ={}, overrides={"mode": "warn", "namespaces": namespaces}))
    classes = rule.namespace_classes()
    spec = label_policy(**namespaces)
    values = {"env": ["prod", "dev", None], "tier": ["sandbox", None], "lab": ["yes", None], "owner": ["bob", None],
              "gatewatch.io/mode": ["off", "audit", "warn", "enforce", None], "gatewatch.io/ignore": ["true", None]}
    label_sets = [{key: value for key, value in zip(values, combination) if value is not None}
                  for combination in itertools.product(*values.values())]
    # What `kubectl label` does: one key set, changed or removed.
    edits = [(old, {**{k: v for k, v in old.items() if k != key}, **({key: value} if value is not None else {})})
             for old in label_sets for key, choices in values.items() for value in choices if old.get(key) != value]
    changes = random.Random(11).sample(edits, 160)  # cel-python evaluates a few ms per expression
    admitted_changes = 0
    for old, new in changes:
        if not admitted(spec, old, new, groups=["team-a"]):
            continue
        admitted_changes += 1
        before, after = rule.decide("team-a", old), rule.decide("team-a", new)
        assert after.mode >= before.mode, (old, new, before, after)
        if before.mode.value == "enforce":
            (entry,) = [c for c in classes if label_selector_matches(
                c.selector(), {**new, "kubernetes.io/metadata.name": "team-a"})]
            assert entry.mode.value == "enforce"  # still the entry that fails closed
    assert admitted_changes >= 10  # the tenant could still change something: the check ran
