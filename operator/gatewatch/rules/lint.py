"""``gatewatch rules lint``: small validators, each checking one thing about a rule.

A loaded rule is already valid (the loader refuses bad rules); lint says
whether it will do what its author expects at admission time, where a request
carries less than an audit event (no source.ip, no user agent, ...) and only
Pod CREATE, pods/exec, pods/attach and pods/ephemeralcontainers are reviewed.

Levels: ``error`` the rule can never match any gatewatch document;
``warning`` it can never match at admission or is probably a mistake;
``info`` worth knowing (what a new_terms rule keys on at admission).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gatewatch.kql.ast import And, Exists, Nested, Node, Not, Or, Range, Term, Wildcard
from gatewatch.errors import quoted
from gatewatch.kql.glob import glob_matcher
from gatewatch.rules.attack import Status, attack_data
from gatewatch.rules.model import Action, Origin, Rule, RuleSet, RuleType, Severity, is_admission_unavailable

Level = Literal["error", "warning", "info"]
LEVELS: tuple[Level, ...] = ("error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    rule_id: str
    message: str
    validator: str
    origin: Origin | None = None


class RuleValidator(Protocol):
    """Checks one thing about one rule."""

    name: str

    def validate(self, rule: Rule) -> Iterable[Finding]: ...


# --- what a rule's query requires -----------------------------------------------------


def required_matches(node: Node) -> dict[str, list[list[Term | Wildcard]]]:
    """Field -> constraints, each a list of matches one of which the field must satisfy
    for ``node`` to hold.

    Only what is certain: plain matches at the top, inside ``and``, and ``or``
    lists over a single field (``verb:(create or get)``); anything under
    ``not`` or in a mixed ``or`` is left out.
    """
    if isinstance(node, (Term, Wildcard)) and node.field is not None:
        return {node.field: [[node]]}
    if isinstance(node, Exists):  # field:* : any value, but there must be one
        return {node.field: [[Wildcard(node.field, ("", ""))]]}
    if isinstance(node, And):
        merged: dict[str, list[list[Term | Wildcard]]] = {}
        for item in node.items:
            for field, constraints in required_matches(item).items():
                merged.setdefault(field, []).extend(constraints)
        return merged
    if isinstance(node, Or) and all(isinstance(item, (Term, Wildcard)) for item in node.items):
        fields = {item.field for item in node.items}  # type: ignore[union-attr]
        field = fields.pop() if len(fields) == 1 else None
        if field is not None:
            return {field: [list(node.items)]}  # type: ignore[arg-type]
    return {}


def _accepts(match: Term | Wildcard, value: str) -> bool:
    # The linear-time matcher the compiler uses: a regex of the pattern could backtrack for long.
    parts = (match.value,) if isinstance(match, Term) else match.parts
    return glob_matcher(parts, case_insensitive=match.case_insensitive)(value)


def _shown(matches: Sequence[Term | Wildcard]) -> str:
    return " or ".join(m.value if isinstance(m, Term) else "*".join(m.parts) for m in matches)


def _query_node(rule: Rule) -> Node | None:
    return rule.required_node  # type: ignore[no-any-return]


def _finding(rule: Rule, level: Level, message: str, validator: str) -> Finding:
    return Finding(level=level, rule_id=rule.id, message=message, validator=validator, origin=rule.origin)


# --- validators ---------------------------------------------------------------------------


class AdmissionUnavailableFields:
    """Fields a rule uses that admission requests never carry."""

    name = "admission-unavailable-fields"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        used = sorted(field for field in getattr(rule.matcher, "fields", ()) if is_admission_unavailable(field))
        if used:
            yield _finding(
                rule, "warning",
                f"query uses {', '.join(used)}, which admission requests never carry: at admission a "
                "condition on it never holds (and 'not' on it always does); it works on audit logs (replay)",
                self.name,
            )
        for index, exception in enumerate(rule.exception_matchers):
            missing = sorted(f for f in getattr(exception, "fields", ()) if is_admission_unavailable(f))
            if missing:
                yield _finding(
                    rule, "warning",
                    f"exception {index + 1} uses {', '.join(missing)}, which admission requests never carry: "
                    "it never suppresses a match at admission",
                    self.name,
                )
        if rule.type is RuleType.NEW_TERMS and rule.new_terms is not None:
            unavailable = rule.new_terms.unavailable_at_admission()
            if unavailable:
                remaining = rule.new_terms.admission_fields()
                instead = (
                    f"at admission it keys on {', '.join(remaining)} only"
                    if remaining
                    else "no field remains, so every admission match counts as new"
                )
                yield _finding(
                    rule, "info",
                    f"new_terms field(s) {', '.join(unavailable)} are never present at admission; {instead}",
                    self.name,
                )


# Values a gatewatch admission document can have, per field (documents/mapping.py).
_DATASET_FIELDS = ("event.dataset", "data_stream.dataset")
_ADMISSION_VALUES: dict[str, tuple[tuple[str, ...], str]] = {
    # Kept equal to admission.WEBHOOK_ROUTES by tests/test_access_paths.py (rules may not import admission).
    "kubernetes.audit.objectRef.resource": (("pods", "nodes"), "only pods and nodes/proxy are reviewed"),
    "orchestrator.resource.type": (("pods", "nodes"), "only pods and nodes/proxy are reviewed"),
    "kubernetes.audit.objectRef.subresource": (
        ("exec", "attach", "ephemeralcontainers", "portforward", "proxy"),
        "the reviewed subresources are exec, attach, ephemeralcontainers, portforward and proxy",
    ),
    "kubernetes.audit.verb": (
        ("create", "update", "patch"),
        "admission sees create (Pod CREATE, exec/attach CONNECT) and update/patch (ephemeral containers)",
    ),
    "event.action": (
        ("create", "update", "patch"),
        "admission sees create (Pod CREATE, exec/attach CONNECT) and update/patch (ephemeral containers)",
    ),
    "kubernetes.audit.stage": (("ResponseComplete",), "admission documents have stage ResponseComplete"),
    "kubernetes.audit.annotations.authorization_k8s_io/decision": (
        ("allow",), "a request under admission review was already allowed"
    ),
    "event.outcome": (("success",), "a request under admission review was already allowed"),
}


class AdmissionReachability:
    """Queries that can never match an admission document (or any document at all)."""

    name = "admission-reachability"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        if rule.aggregates:
            yield _finding(
                rule, "warning",
                "ES|QL STATS aggregates over many events; replay only: admission, which sees one request, "
                "never evaluates it",
                self.name,
            )
            return
        if rule.sequence:
            yield _finding(
                rule, "warning",
                "EQL sequence spans many events; replay only: admission, which sees one request, never evaluates it",
                self.name,
            )
            return
        node = _query_node(rule)
        if node is None:
            return
        required = required_matches(node)
        for field in _DATASET_FIELDS:
            for constraint in required.get(field, ()):
                if not any(_accepts(m, "kubernetes.audit_logs") for m in constraint):
                    yield _finding(
                        rule, "error",
                        f"requires {field} {quoted(_shown(constraint))}, but every gatewatch document has "
                        "kubernetes.audit_logs: the rule can never match",
                        self.name,
                    )
        for field, (values, why) in _ADMISSION_VALUES.items():
            for constraint in required.get(field, ()):
                if not any(_accepts(m, v) for m in constraint for v in values):
                    yield _finding(
                        rule, "warning",
                        f"requires {field} {quoted(_shown(constraint))}, which never occurs at admission ({why}); "
                        "the rule only matches audit logs (replay)",
                        self.name,
                    )
        for field in sorted(required):
            if is_admission_unavailable(field):
                yield _finding(
                    rule, "warning",
                    f"requires {field}, which admission requests never carry: the rule can never match at admission",
                    self.name,
                )


# A rule tagged so checks hygiene, not an attack technique: it has no ATT&CK mapping by design.
HYGIENE_TAG = "Rule Type: Hygiene"


class AttackMapping:
    """Every rule should say which ATT&CK tactics and techniques it detects (unless it says it is hygiene)."""

    name = "attack-mapping"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        if not rule.threat and HYGIENE_TAG in rule.tags:
            yield _finding(rule, "info", f"no ATT&CK mapping: a hygiene control ({HYGIENE_TAG!r})", self.name)
        elif not rule.threat:
            yield _finding(rule, "warning", "no ATT&CK mapping (threat): add its tactic and technique", self.name)
        elif not rule.technique_ids:
            yield _finding(rule, "info", "ATT&CK tactic without a technique", self.name)


class AttackIds:
    """ATT&CK ids and names as the shipped ATT&CK version has them: a revoked,
    deprecated or unknown id, or another name for a current one, loads (the id
    counts) but is probably out of date or a typo."""

    name = "attack-ids"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        data = attack_data()
        for threat in rule.threat:
            tactic = data.tactic(threat.tactic.id)
            if tactic is None:
                yield _finding(
                    rule, "warning", f"tactic {threat.tactic.id} is not in ATT&CK Enterprise v{data.version}", self.name
                )
            elif not tactic.accepts_name(threat.tactic.name):
                yield self._renamed(rule, threat.tactic.id, threat.tactic.name, tactic.name, data.version)
            for technique in threat.techniques:
                for item in (technique, *technique.subtechniques):
                    resolution = data.resolve_technique(item.id)
                    if resolution.status is not Status.CURRENT:
                        yield _finding(rule, "warning", resolution.describe(data.version), self.name)
                    elif resolution.entry is not None and not resolution.entry.accepts_name(item.name):
                        yield self._renamed(rule, item.id, item.name, resolution.entry.name, data.version)

    def _renamed(self, rule: Rule, attack_id: str, written: str, name: str, version: str) -> Finding:
        return _finding(
            rule, "warning", f"{attack_id} is named {name!r} in ATT&CK Enterprise v{version}, not {quoted(written)}",
            self.name,
        )


class DenyOnLowSeverity:
    """A low-severity rule that may deny requests is probably mis-set."""

    name = "deny-on-low-severity"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        if rule.action is Action.DENY and rule.severity is Severity.LOW:
            yield _finding(
                rule, "warning",
                "action deny on a low-severity rule: raise the severity or lower the action to warn",
                self.name,
            )


class DisabledRule:
    """Disabled rules are loaded (and checked) but never evaluated."""

    name = "disabled-rule"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        if not rule.enabled:
            yield _finding(rule, "info", "disabled (enabled: false): loaded but not evaluated", self.name)


def _costly_parts(node: Node, prefix: str = "") -> Iterable[str]:
    """What in a query makes every evaluation walk the whole document."""
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from _costly_parts(item, prefix)
    elif isinstance(node, Not):
        yield from _costly_parts(node.item, prefix)
    elif isinstance(node, Nested):
        if "*" in node.field:
            yield f"wildcard field name {quoted(prefix + node.field)}"
        yield from _costly_parts(node.query, f"{prefix}{node.field}.")
    elif isinstance(node, (Term, Wildcard)) and node.field is None:
        yield f"free-text term {quoted(node.value if isinstance(node, Term) else '*'.join(node.parts))} (no field)"
    elif isinstance(node, (Term, Wildcard, Exists, Range)) and node.field is not None and "*" in node.field:
        yield f"wildcard field name {quoted(prefix + node.field)}"


class ExpensiveQuery:
    """Queries whose cost grows with the whole document, on every evaluation.

    Matching is linear in time (no wildcard backtracks), but a wildcard field
    name (``labels.*``) or a free-text term must visit every field of the
    review, for this rule alone: a large Pod makes every review pay for it.
    """

    name = "expensive-query"

    def validate(self, rule: Rule) -> Iterable[Finding]:
        queries = [("query", _query_node(rule))]
        queries += [(f"exception {index + 1}", getattr(m, "node", None)) for index, m in enumerate(rule.exception_matchers)]
        for where, node in queries:
            if node is None:
                continue
            for part in dict.fromkeys(_costly_parts(node)):
                yield _finding(
                    rule, "warning",
                    f"{where} has a {part}: every evaluation walks every field of the document, "
                    "so its cost grows with the size of each review; name the field instead",
                    self.name,
                )


DEFAULT_VALIDATORS: tuple[RuleValidator, ...] = (
    AdmissionReachability(),
    AdmissionUnavailableFields(),
    AttackMapping(),
    AttackIds(),
    DenyOnLowSeverity(),
    DisabledRule(),
    ExpensiveQuery(),
)


def lint_ruleset(ruleset: RuleSet, *, validators: Sequence[RuleValidator] = DEFAULT_VALIDATORS) -> list[Finding]:
    """All findings for the rules of ``ruleset``, in rule order."""
    return [finding for rule in ruleset.rules for validator in validators for finding in validator.validate(rule)]


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(finding.level == "error" for finding in findings)


def format_findings(findings: Sequence[Finding]) -> str:
    """One line per finding: ``rules.yaml:12: warning: rule 'x': message [validator]``."""
    if not findings:
        return "no findings"
    return "\n".join(
        f"{finding.origin or '<rules>'}: {finding.level}: rule {finding.rule_id!r}: "
        f"{finding.message} [{finding.validator}]"
        for finding in findings
    )
