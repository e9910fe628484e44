"""The mode rule (gatewatch.namespace_modes): labels only tighten, and the webhook's label selectors
say exactly what ``decide`` says.

The selectors are read the way the API server reads them (the apiserver harness's
``label_selector_matches``), on label sets generated from each configuration's own
keys and values, so a class that overlaps another or gives another mode than
``decide`` fails here.
"""
from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from apiserver_harness import label_selector_matches
from gatewatch.config import load_settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError
from gatewatch.namespace_modes import ModePolicy

PROD_ENFORCES_SANDBOX_AUDITS = [  # the issue's example; the weaker selector first, so first-match would pick it
    {"matchLabels": {"tier": "sandbox"}, "mode": "audit"},
    {"matchLabels": {"env": "prod"}, "mode": "enforce"},
]


def policy(**config: Any) -> ModePolicy:
    return ModePolicy.from_settings(load_settings(environ={}, overrides=config))


# --- labels only tighten ---------------------------------------------------------------------


def test_adding_a_weaker_selectors_label_to_a_prod_namespace_does_not_turn_denial_into_audit():
    rule = policy(mode="warn", namespaces={"selectors": PROD_ENFORCES_SANDBOX_AUDITS})
    assert rule.decide("shop", {"env": "prod"}).mode is Mode.ENFORCE
    attempt = rule.decide("shop", {"env": "prod", "tier": "sandbox"})
    assert (attempt.mode, attempt.source) == (Mode.ENFORCE, "selector")
    # Nor below the default, and the alert can say which selector did not count.
    sandbox = rule.decide("team-a", {"tier": "sandbox"})
    assert (sandbox.mode, sandbox.source) == (Mode.WARN, "default")
    assert [selector.position for selector in sandbox.ignored_selectors] == [0]


def test_a_selector_whose_labels_are_protected_may_loosen():
    rule = policy(mode="warn", namespaces={"selectors": PROD_ENFORCES_SANDBOX_AUDITS, "protectedLabels": ["tier"]})
    assert rule.decide("team-a", {"tier": "sandbox"}).mode is Mode.AUDIT
    # It lowers the baseline, not what an unprotected selector or the mode label raise.
    assert rule.decide("shop", {"env": "prod", "tier": "sandbox"}).mode is Mode.ENFORCE
    assert rule.decide("team-b", {"tier": "sandbox", "gatewatch.io/mode": "warn"}).mode is Mode.WARN
    # Protected means every key the selector reads: one unprotected key is enough to only tighten.
    mixed = policy(mode="warn", namespaces={"protectedLabels": ["tier"], "selectors": [
        {"matchLabels": {"tier": "sandbox", "owner": "lab"}, "mode": "off"}]})
    assert mixed.decide("lab", {"tier": "sandbox", "owner": "lab"}).mode is Mode.WARN


def test_selectors_on_the_name_label_are_protected_without_saying_so():
    rule = policy(mode="enforce", namespaces={"selectors": [
        {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["lab"]}],
         "mode": "audit"}]})
    assert rule.decide("lab", {}).mode is Mode.AUDIT
    assert rule.decide("shop", {"kubernetes.io/metadata.name": "lab"}).mode is Mode.ENFORCE  # the real name counts


def test_the_mode_label_only_tightens_and_is_read_exactly():
    rule = policy(mode="warn")
    assert rule.decide("a", {"gatewatch.io/mode": "enforce"}).mode is Mode.ENFORCE
    weaker = rule.decide("a", {"gatewatch.io/mode": "off"})
    assert (weaker.mode, weaker.ignored_label) == (Mode.WARN, Mode.OFF)
    # The API server's label selector compares exactly: so does gatewatch.
    odd = rule.decide("a", {"gatewatch.io/mode": "Enforce"})
    assert (odd.mode, odd.invalid_label) == (Mode.WARN, "Enforce")


def test_the_platform_teams_explicit_word_and_the_exemptions_win():
    rule = policy(mode="enforce", namespace="gatewatch",
                  namespaces={"modes": {"sandbox": "off"}, "exempt": ["monitoring"], "ignoreLabel": True})
    assert rule.decide("sandbox", {"gatewatch.io/mode": "enforce"}).source == "config"
    assert rule.decide("sandbox", {}).mode is Mode.OFF
    for name, labels in (("monitoring", {}), ("gatewatch", {}), ("kube-system", {}),
                         ("team", {"gatewatch.io/ignore": "true"})):
        assert rule.decide(name, labels).source == "excluded"


def test_the_ignore_label_is_off_by_default():
    assert policy(mode="enforce").decide("team", {"gatewatch.io/ignore": "true"}).mode is Mode.ENFORCE


def test_the_mode_label_cannot_be_declared_protected():
    with pytest.raises(ConfigError, match="gatewatch.io/mode cannot be protected"):
        policy(namespaces={"protectedLabels": ["gatewatch.io/mode"]})


@pytest.mark.parametrize("requirement", [
    {"key": "env", "operator": "In", "values": []},
    {"key": "env", "operator": "Exists", "values": ["x"]},
    {"key": "not a key", "operator": "Exists"},
    {"key": "env", "operator": "In", "values": ["not a value"]},
])
def test_selectors_the_api_server_would_refuse_are_config_errors(requirement):
    with pytest.raises(ConfigError, match="namespaces.selectors.0"):
        policy(namespaces={"selectors": [{"matchExpressions": [requirement], "mode": "enforce"}]})


# --- the strongest mode, for when labels cannot be read ---------------------------------------


def test_the_strongest_mode_is_enforce_unless_the_name_decides():
    rule = policy(mode="audit", namespaces={"modes": {"sandbox": "off", "lab": "warn"}, "exempt": ["monitoring"]})
    assert rule.strongest("anything") is Mode.ENFORCE  # a label could always say enforce
    assert rule.strongest("lab") is Mode.WARN
    assert rule.strongest("sandbox") is Mode.OFF
    assert rule.strongest("monitoring") is Mode.OFF


# --- the same rule as label selectors ---------------------------------------------------------

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "default enforce": {"mode": "enforce"},
    "default off": {"mode": "off"},
    "the issue's selectors": {"namespaces": {"selectors": PROD_ENFORCES_SANDBOX_AUDITS}},
    "protected selectors": {"namespaces": {
        "selectors": [*PROD_ENFORCES_SANDBOX_AUDITS, {"matchLabels": {"tier": "lab"}, "mode": "off"}],
        "protectedLabels": ["tier"]}},
    "everything": {"mode": "audit", "namespace": "security", "namespaces": {
        "modes": {"payments": "enforce", "sandbox": "off", "shop": "warn", "monitoring": "enforce"},
        "exempt": ["monitoring"],
        "ignoreLabel": True,
        "protectedLabels": ["env", "tier"],
        "selectors": [
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "test"]}], "mode": "off"},
            {"matchLabels": {"env": "prod", "team": "web"}, "mode": "enforce"},
            {"matchExpressions": [{"key": "tier", "operator": "Exists"}], "mode": "warn"},
            {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["web"]},
                                  {"key": "pci", "operator": "DoesNotExist"}], "mode": "warn"},
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}], "mode": "enforce"},
        ]}},
}


def label_sets(rule: ModePolicy, names: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every combination of the values the configuration mentions (plus one it does not, plus absent)."""
    values: dict[str, set[str]] = {"gatewatch.io/mode": {"off", "audit", "warn", "enforce", "Enforce"},
                                   "gatewatch.io/ignore": {"true", "false"}}
    for selector in rule.selectors:
        for requirement in selector.requirements:
            values.setdefault(requirement.key, set()).update(requirement.values)
    keys = sorted(values)
    choices = [sorted(values[key]) + ["other", None] for key in keys]
    combinations = list(itertools.product(*choices))
    random.Random(7).shuffle(combinations)
    cases = []
    for index, combination in enumerate(combinations[:3000]):
        labels = {key: value for key, value in zip(keys, combination) if value is not None}
        cases.append((names[index % len(names)], labels))
    return cases


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_exactly_one_class_selects_each_namespace_with_the_mode_decide_gives(name):
    config = CONFIGURATIONS[name]
    rule = policy(**config)
    classes = rule.namespace_classes()
    names = ["payments", "sandbox", "shop", "monitoring", "security", "kube-system", "team-a", "team-b"]
    strongest = {namespace: rule.strongest(namespace) for namespace in names}
    for namespace, labels in label_sets(rule, names):
        # The API server sees the name label on every namespace.
        seen = {**labels, "kubernetes.io/metadata.name": namespace}
        selected = [entry for entry in classes if label_selector_matches(entry.selector(), seen)]
        decision = rule.decide(namespace, labels)
        if decision.mode is Mode.OFF:
            assert selected == [], (namespace, labels)
        else:
            assert [entry.mode for entry in selected] == [decision.mode], (namespace, labels, selected)
        assert strongest[namespace] >= decision.mode


def test_classes_stay_few_for_the_common_configurations():
    assert [c.mode for c in policy().namespace_classes()] == [Mode.ENFORCE, Mode.WARN]
    issue = policy(namespaces={"selectors": PROD_ENFORCES_SANDBOX_AUDITS}).namespace_classes()
    assert [c.mode for c in issue] == [Mode.ENFORCE, Mode.ENFORCE, Mode.WARN]
    assert policy(mode="enforce").namespace_classes()[0].selector() == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["gatewatch", "kube-system"]}]}


def test_a_configuration_too_complex_for_webhook_selectors_is_refused_clearly():
    # Ten two-label selectors that only raise: their complement needs 2**10 disjoint selectors.
    selectors = [{"matchLabels": {f"a{i}": "x", f"b{i}": "y"}, "mode": "enforce"} for i in range(10)]
    with pytest.raises(ConfigError, match="namespaces.selectors.*more than 32 webhook namespaceSelectors"):
        policy(mode="warn", namespaces={"selectors": selectors}).namespace_classes()
    # The same selectors reading protected labels only: a first-match list, a handful of classes.
    protected = policy(mode="warn", namespaces={"selectors": selectors[:4], "protectedLabels": [
        key for selector in selectors[:4] for key in selector["matchLabels"]]})
    assert len(protected.namespace_classes()) <= 32
