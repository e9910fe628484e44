"""Which mode a namespace's labels give it, and the same rule as Kubernetes label selectors.

The rule (docs/configuration.md#namespace-modes), for a namespace not exempt:

1. ``namespaces.modes[<name>]``: the platform team's explicit word, which may
   loosen or tighten;
2. otherwise the **strongest** of
   - the baseline: the first matching *protected* selector, else ``mode`` (the
     default). A selector is protected when every label key it reads is in
     ``namespaces.protectedLabels`` (or is ``kubernetes.io/metadata.name``,
     which the API server sets and nobody can change);
   - every other matching selector: whoever may label the namespace can add
     the label it reads, so it may raise the mode, never lower it;
   - the label ``gatewatch.io/mode`` (exactly ``off``, ``audit``, ``warn`` or
     ``enforce``), which may only raise it too.

``ModePolicy.decide`` applies the rule to a namespace's labels.
``ModePolicy.namespace_classes`` writes the same rule as disjoint Kubernetes
label selectors, one per (mode, selector) class: the webhook configuration
registers one entry per class, so the API server, which reads namespace labels
itself, tells gatewatch each request's mode (the entry's path) and applies
``failurePolicy: Fail`` exactly where the mode is ``enforce``. A test checks
the two against each other on generated label sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from gatewatch.config import IGNORE_LABEL, MODE_LABEL, NamespaceSelectorMode, Settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace, immutable
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
_NEGATION: dict[str, Operator] = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist", "DoesNotExist": "Exists"}
# Strongest first: the order in which label values are worth telling apart.
_RAISING_LABEL_MODES = (Mode.ENFORCE, Mode.WARN, Mode.AUDIT)
# Each class is one webhook entry per handler. Disjoint selectors for the complement of
# several multi-label selectors grow exponentially: past this, the configuration is refused
# (and the search stops after _MAX_SPLITS steps, well before it would take long).
MAX_NAMESPACE_CLASSES = 32
_MAX_SPLITS = 1024


@dataclass(frozen=True)
class Requirement:
    """One label-selector requirement (``matchLabels`` pairs are ``In`` with one value)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def negated(self) -> Requirement:
        return Requirement(self.key, _NEGATION[self.operator], self.values)

    def holds(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: ``NotIn`` holds for an absent key."""
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values

    def as_dict(self) -> dict[str, Any]:
        if self.operator in ("Exists", "DoesNotExist"):
            return {"key": self.key, "operator": self.operator}
        return {"key": self.key, "operator": self.operator, "values": list(self.values)}


@dataclass(frozen=True)
class ModeSelector:
    """One ``namespaces.selectors`` entry: all ``requirements`` hold -> ``mode``."""

    requirements: tuple[Requirement, ...]
    mode: Mode
    protected: bool  # may lower the mode: every key it reads is protected
    position: int  # in namespaces.selectors, for messages

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.holds(labels) for requirement in self.requirements)

    def describe(self) -> str:
        return f"namespaces.selectors[{self.position}] ({self.mode.value})"


Source = Literal["config", "label", "selector", "default", "excluded"]


@dataclass(frozen=True)
class ModeDecision:
    """What a namespace's labels give it, and why."""

    mode: Mode
    source: Source
    # A gatewatch.io/mode label asking for less than ``mode``: ignored.
    ignored_label: Mode | None = None
    # A gatewatch.io/mode label that is not a mode (the raw value): ignored.
    invalid_label: str | None = None
    # Unprotected selectors that matched but asked for less than ``mode``: they cannot lower it.
    ignored_selectors: tuple[ModeSelector, ...] = ()


@dataclass(frozen=True)
class NamespaceClass:
    """Namespaces whose mode is ``mode``: those matching every one of ``requirements``."""

    mode: Mode
    requirements: tuple[Requirement, ...]

    def selector(self) -> dict[str, Any]:
        """The webhook entry's ``namespaceSelector``."""
        return {"matchExpressions": [requirement.as_dict() for requirement in self.requirements]}


# Distinct (namespace, labels) decisions ModePolicy remembers; past that it starts over.
_MAX_REMEMBERED_DECISIONS = 4096


class ModePolicy:
    """The configuration's mode rule: for one namespace (``decide``) and as label selectors."""

    def __init__(
        self,
        *,
        default: Mode,
        explicit: Mapping[str, Mode] | None = None,
        selectors: Sequence[NamespaceSelectorMode] = (),
        protected_labels: Iterable[str] = (),
        excluded: Iterable[str] = (),
        ignore_label: bool = False,
    ) -> None:
        self.default = default
        self.explicit = dict(explicit or {})
        protected = {*protected_labels, NAMESPACE_NAME_LABEL}
        self.selectors = tuple(_mode_selector(entry, position, protected) for position, entry in enumerate(selectors))
        self.excluded = frozenset(excluded)
        self.ignore_label = ignore_label
        self._decisions: dict[tuple[str, frozenset[tuple[str, str]]], ModeDecision] = {}
        # Every entry's selector starts with these: the namespaces never sent to gatewatch.
        self._never_sent: tuple[Requirement, ...] = (
            *((Requirement(NAMESPACE_NAME_LABEL, "NotIn", tuple(sorted(self.excluded))),) if self.excluded else ()),
            *((Requirement(IGNORE_LABEL, "NotIn", ("true",)),) if ignore_label else ()),
        )
        by_mode: dict[Mode, list[str]] = {}
        for name, mode in sorted(self.explicit.items()):
            if name not in self.excluded:
                by_mode.setdefault(mode, []).append(name)
        self._explicit_atoms = tuple(
            (mode, Requirement(NAMESPACE_NAME_LABEL, "In", tuple(names)))
            for mode, names in sorted(by_mode.items(), key=lambda item: -item[0].rank)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ModePolicy:
        namespaces = settings.namespaces
        return cls(
            default=settings.mode, explicit=namespaces.modes, selectors=namespaces.selectors,
            protected_labels=namespaces.protected_labels, excluded=settings.excluded_namespaces,
            ignore_label=namespaces.ignore_label,
        )

    # --- one namespace -----------------------------------------------------------------------

    def decide(self, namespace: str, labels: Mapping[str, str]) -> ModeDecision:
        """The mode ``labels`` give ``namespace`` (``kubernetes.io/metadata.name`` is implied)."""
        # Asked for every review, mostly with the same few namespaces' labels: remembered by value.
        try:
            key = (namespace, frozenset(labels.items()))
        except TypeError:  # a label value that is no string: not remembered
            return self._decide(namespace, labels)
        found = self._decisions.get(key)
        if found is None:
            if len(self._decisions) >= _MAX_REMEMBERED_DECISIONS:
                self._decisions.clear()
            found = self._decisions[key] = self._decide(namespace, labels)
        return found

    def _decide(self, namespace: str, labels: Mapping[str, str]) -> ModeDecision:
        labels = {**labels, NAMESPACE_NAME_LABEL: namespace}
        if not all(requirement.holds(labels) for requirement in self._never_sent):
            return ModeDecision(Mode.OFF, "excluded")
        if namespace in self.explicit:
            return ModeDecision(self.explicit[namespace], "config")
        baseline, source = self.default, "default"
        for selector in self.selectors:
            if selector.protected and selector.matches(labels):
                baseline, source = selector.mode, "selector"
                break
        mode = baseline
        for selector in self.selectors:
            if not selector.protected and selector.mode > mode and selector.matches(labels):
                mode, source = selector.mode, "selector"
        raw = labels.get(MODE_LABEL)
        asked = _label_mode(raw)
        if asked is not None and asked > mode:
            mode, source = asked, "label"
        # Reported: unprotected selectors that would have loosened the baseline, had they been obeyed.
        ignored = tuple(selector for selector in self.selectors
                        if not selector.protected and selector.mode < baseline and selector.matches(labels))
        return ModeDecision(
            mode, source,  # type: ignore[arg-type]
            ignored_label=asked if asked is not None and asked < mode else None,
            invalid_label=raw if raw is not None and asked is None else None,
            ignored_selectors=ignored,
        )

    def strongest(self, namespace: str) -> Mode:
        """The strongest mode any labels could give ``namespace``: for when they cannot be read."""
        cube = (*self._never_sent, Requirement(NAMESPACE_NAME_LABEL, "In", (namespace,)))
        if not _satisfiable(cube):
            return Mode.OFF
        return max(mode for _, mode in self._split(cube, [_MAX_SPLITS]))

    def cluster_mode(self) -> Mode:
        """The mode for a cluster-scoped request (``nodes/proxy``): the strongest mode ``mode``,
        ``namespaces.selectors`` and ``namespaces.modes`` give. Through a node's kubelet a request
        reaches the pods of every namespace on the node, so the enforced namespaces decide; the
        ``gatewatch.io/mode`` label does not count (a tenant's label must not set what applies
        cluster-wide)."""
        explicit = (mode for name, mode in self.explicit.items() if name not in self.excluded)
        return max((self.default, *(selector.mode for selector in self.selectors), *explicit),
                   key=lambda mode: mode.rank)

    # --- as label selectors ------------------------------------------------------------------

    def namespace_classes(self) -> tuple[NamespaceClass, ...]:
        """Disjoint label selectors, each with the mode of every namespace it matches, strongest first.

        Together they match every namespace gatewatch is sent; ``off`` namespaces are
        left out (nothing would be evaluated there). Found by splitting the label space
        on the requirements the rule reads until the mode is known, then merging
        splits that did not matter. Raises ConfigError past ``MAX_NAMESPACE_CLASSES``.
        """
        too_many = ConfigError(
            f"the namespace modes need more than {MAX_NAMESPACE_CLASSES} webhook namespaceSelectors per handler: "
            "selectors that each read several labels multiply them; prefer selectors reading one label, or "
            "name namespaces in namespaces.modes",
            source="namespaces.selectors")
        try:
            leaves = self._split(self._never_sent, [_MAX_SPLITS])
        except _TooComplex:
            raise too_many from None
        classes = [NamespaceClass(mode, _canonical(cube)) for cube, mode in leaves if mode is not Mode.OFF]
        if len(classes) > MAX_NAMESPACE_CLASSES:
            raise too_many
        return tuple(sorted(classes, key=lambda entry: -entry.mode.rank))

    def _split(self, cube: tuple[Requirement, ...], budget: list[int]) -> list[tuple[tuple[Requirement, ...], Mode]]:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooComplex
        low, high = self._bounds(cube)
        if low == high:
            return [(cube, low)]
        atom = self._next_atom(cube, low, high)
        holds = self._split((*cube, atom), budget)
        fails = self._split((*cube, atom.negated()), budget)
        if len(holds) == len(fails) == 1 and holds[0][1] == fails[0][1]:
            return [(cube, holds[0][1])]  # the split did not matter
        return holds + fails

    def _bounds(self, cube: tuple[Requirement, ...]) -> tuple[Mode, Mode]:
        """The weakest and strongest mode of the namespaces ``cube`` matches (sound, exact once decided)."""
        explicit_possible = []
        for mode, atom in self._explicit_atoms:
            decided = _decides(cube, atom)
            if decided is True:
                return mode, mode
            if decided is None:
                explicit_possible.append(mode)
        baseline, raised_low, raised_high = self._baseline_candidates(cube), Mode.OFF, Mode.OFF
        for selector in self.selectors:
            if selector.protected:
                continue
            state = _state(cube, selector.requirements)
            if state is True:
                raised_low = max(raised_low, selector.mode)
            if state is not False:
                raised_high = max(raised_high, selector.mode)
        for mode in _RAISING_LABEL_MODES:
            decided = _decides(cube, Requirement(MODE_LABEL, "In", (mode.value,)))
            if decided is True:
                raised_low = max(raised_low, mode)
            if decided is not False:
                raised_high = max(raised_high, mode)
        low = max(min(baseline), raised_low)
        high = max(max(baseline), raised_high)
        if explicit_possible:
            low = min(low, *explicit_possible)
            high = max(high, *explicit_possible)
        return low, high

    def _baseline_candidates(self, cube: tuple[Requirement, ...]) -> list[Mode]:
        """The modes the first-match walk over protected selectors can end in."""
        candidates = []
        for selector in self.selectors:
            if not selector.protected:
                continue
            state = _state(cube, selector.requirements)
            if state is True:
                return [*candidates, selector.mode]
            if state is None:
                candidates.append(selector.mode)
        return [*candidates, self.default]

    def _next_atom(self, cube: tuple[Requirement, ...], low: Mode, high: Mode) -> Requirement:
        """The next undecided requirement that can still change the mode.

        Explicit names first (they override everything), then whatever can raise
        the mode to ``high`` (settling the strongest mode at once keeps the number
        of classes down), then the protected selectors in order, then the rest of
        what can raise it above ``low``.
        """
        for _, atom in self._explicit_atoms:
            if _decides(cube, atom) is None:
                return atom
        raising = [*((selector.mode, selector.requirements) for selector in self.selectors if not selector.protected),
                   *((mode, (Requirement(MODE_LABEL, "In", (mode.value,)),)) for mode in _RAISING_LABEL_MODES)]
        raising.sort(key=lambda candidate: len(candidate[1]))  # one-requirement splits leave fewer pieces
        for mode, requirements in raising:
            if mode == high and _state(cube, requirements) is None:
                return _undecided(cube, requirements)
        if max(self._baseline_candidates(cube)) > low:  # else the baseline cannot decide anything
            for selector in self.selectors:
                if not selector.protected:
                    continue
                state = _state(cube, selector.requirements)
                if state is True:
                    break
                if state is None:
                    return _undecided(cube, selector.requirements)
        for mode, requirements in raising:
            if mode > low and _state(cube, requirements) is None:
                return _undecided(cube, requirements)
        raise AssertionError(f"mode bounds differ but nothing is left to split on: {cube}")


class _TooComplex(Exception):
    """The split ran out of its budget."""


def _label_mode(value: str | None) -> Mode | None:
    """The mode a gatewatch.io/mode value asks for; exact values only, as a label selector reads them."""
    if value is None:
        return None
    try:
        return Mode(value)
    except ValueError:
        return None


def _mode_selector(entry: NamespaceSelectorMode, position: int, protected: set[str]) -> ModeSelector:
    requirements = tuple(
        [Requirement(key, "In", (value,)) for key, value in entry.match_labels.items()]
        + [Requirement(expression.key, expression.operator, tuple(sorted(set(expression.values))))
           for expression in entry.match_expressions]
    )
    return ModeSelector(requirements, entry.mode, all(r.key in protected for r in requirements), position)


# --- reasoning about conjunctions of requirements ------------------------------------------------


@dataclass
class _KeyConstraint:
    """What a conjunction of requirements says about one label key."""

    present: bool = False  # must be present
    absent: bool = False  # must be absent
    allowed: frozenset[str] | None = None  # if present, one of these (None: any)
    excluded: frozenset[str] = frozenset()  # if present, none of these

    def add(self, requirement: Requirement) -> None:
        values = frozenset(requirement.values)
        if requirement.operator == "In":
            self.present = True
            self.allowed = values if self.allowed is None else self.allowed & values
        elif requirement.operator == "NotIn":
            self.excluded |= values
        elif requirement.operator == "Exists":
            self.present = True
        else:
            self.absent = True

    def satisfiable(self) -> bool:
        if self.absent:
            return not self.present
        if self.allowed is not None:
            return bool(self.allowed - self.excluded)
        return True  # absent, or any of infinitely many values


def _constraints(requirements: Iterable[Requirement]) -> dict[str, _KeyConstraint]:
    constraints: dict[str, _KeyConstraint] = {}
    for requirement in requirements:
        constraints.setdefault(requirement.key, _KeyConstraint()).add(requirement)
    return constraints


def _satisfiable(requirements: Iterable[Requirement]) -> bool:
    return all(constraint.satisfiable() for constraint in _constraints(requirements).values())


def _decides(cube: tuple[Requirement, ...], requirement: Requirement) -> bool | None:
    """True: every namespace ``cube`` matches meets ``requirement``; False: none does; None: some do."""
    if not _satisfiable((*cube, requirement.negated())):
        return True
    if not _satisfiable((*cube, requirement)):
        return False
    return None


def _state(cube: tuple[Requirement, ...], requirements: tuple[Requirement, ...]) -> bool | None:
    """Whether all ``requirements`` hold for every namespace ``cube`` matches (True), none (False), or some."""
    if not _satisfiable((*cube, *requirements)):
        return False
    if all(_decides(cube, requirement) is True for requirement in requirements):
        return True
    return None


def _undecided(cube: tuple[Requirement, ...], requirements: Iterable[Requirement]) -> Requirement:
    return next(requirement for requirement in requirements if _decides(cube, requirement) is None)


def _canonical(cube: tuple[Requirement, ...]) -> tuple[Requirement, ...]:
    """The same set of namespaces, at most one requirement per key and kind, keys in first-use order."""
    canonical: list[Requirement] = []
    for key, constraint in _constraints(cube).items():
        if constraint.absent:
            canonical.append(Requirement(key, "DoesNotExist"))
        elif constraint.allowed is not None:
            canonical.append(Requirement(key, "In", tuple(sorted(constraint.allowed - constraint.excluded))))
        else:
            if constraint.present:
                canonical.append(Requirement(key, "Exists"))
            if constraint.excluded:
                canonical.append(Requirement(key, "NotIn", tuple(sorted(constraint.excluded))))
    return tuple(canonical)


__all__ = [
    "ModeDecision",
    "ModePolicy",
    "ModeSelector",
    "NAMESPACE_NAME_LABEL",
    "NamespaceClass",
    "Requirement",
]
