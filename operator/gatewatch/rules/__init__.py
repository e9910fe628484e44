"""Detection rules: the model, the rules.yaml loader, lint, ATT&CK data and the Elastic importer.

    >>> from gatewatch.rules import Action, load_rules
    >>> ruleset = load_rules()          # the rules.yaml shipped with gatewatch
    >>> deny_rules = [rule.id for rule in ruleset.rules if rule.action is Action.DENY]
"""
from gatewatch.rules.loader import default_rules_path, load_rules, load_rules_text
from gatewatch.rules.model import (
    Action,
    Language,
    NewTerms,
    Origin,
    Rule,
    RuleSet,
    RuleType,
    Severity,
    Tactic,
    Technique,
    Threat,
)

__all__ = [
    "Action",
    "Language",
    "NewTerms",
    "Origin",
    "Rule",
    "RuleSet",
    "RuleType",
    "Severity",
    "Tactic",
    "Technique",
    "Threat",
    "default_rules_path",
    "load_rules",
    "load_rules_text",
]
