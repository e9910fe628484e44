"""Decision: what the matches cause, given the namespace's mode.

A rule's action (alert < warn < deny) is the strongest response it may
cause; the namespace's mode (off < audit < warn < enforce) caps it:

    mode     | a rule with action alert | warn           | deny
    ---------+--------------------------+----------------+-----------------
    off      | nothing                  | nothing        | nothing
    audit    | alert                    | alert          | alert
    warn     | alert                    | alert+warning  | alert+warning
    enforce  | alert                    | alert+warning  | alert+denial

Every effect includes the alert and the Event. Exceptions are applied before
this, by the engine: an excepted match is no match.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Sequence

from gatewatch.engine import Match
from gatewatch.errors import GatewatchError
from gatewatch.per_object import PerObject
from gatewatch.rules.model import Action

# Kubernetes caps what it relays of admission warnings; keep within it.
MAX_WARNING_LENGTH = 120
MAX_WARNINGS_TOTAL = 4096


class Mode(enum.Enum):
    OFF = "off"
    AUDIT = "audit"
    WARN = "warn"
    ENFORCE = "enforce"

    @classmethod
    def parse(cls, value: str) -> "Mode":
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(mode.value for mode in cls)
            raise GatewatchError(f"unknown mode {value!r}: must be one of {choices}") from None

    @property
    def rank(self) -> int:
        return _MODE_RANK[self]

    def __lt__(self, other: "Mode") -> bool:
        return self.rank < other.rank

    def __le__(self, other: "Mode") -> bool:
        return self.rank <= other.rank

    def __gt__(self, other: "Mode") -> bool:
        return self.rank > other.rank

    def __ge__(self, other: "Mode") -> bool:
        return self.rank >= other.rank


_MODE_RANK = {Mode.OFF: 0, Mode.AUDIT: 1, Mode.WARN: 2, Mode.ENFORCE: 3}
# The strongest action each mode lets a rule cause (None: gatewatch stays silent).
_MODE_CAP: dict[Mode, Action | None] = {
    Mode.OFF: None,
    Mode.AUDIT: Action.ALERT,
    Mode.WARN: Action.WARN,
    Mode.ENFORCE: Action.DENY,
}

DEFAULT_EXCEPTION_HINT = (
    "To request an exception, ask your cluster administrators to add one to the "
    "gatewatch rule(s) named above (rule ids: {rule_ids})."
)


# Not frozen: one of each is built per review (a frozen dataclass's __init__ costs several times as
# much); nothing changes them once ``decide`` returns.
@dataclass(slots=True)
class Outcome:
    match: Match
    effect: Action


@dataclass(slots=True)
class Decision:
    mode: Mode
    allowed: bool
    warnings: list[str] = field(default_factory=list)
    message: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def denied_by(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.effect is Action.DENY]


def effect_of(action: Action, mode: Mode) -> Action | None:
    """What a rule with ``action`` may cause in ``mode`` (None: nothing): the action, capped by the mode."""
    return _EFFECTS[(action, mode)]


# effect_of for every action and mode, worked out once: asked for every match.
_EFFECTS: dict[tuple[Action, Mode], Action | None] = {
    (action, mode): None if _MODE_CAP[mode] is None else min(action, _MODE_CAP[mode])  # type: ignore[type-var]
    for action in Action for mode in Mode
}


def decide(
    matches: Sequence[Match],
    *,
    mode: Mode,
    exception_hint: str = DEFAULT_EXCEPTION_HINT,
    strongest: Action = Action.DENY,
    about: str | None = None,
) -> Decision:
    """Turn matches into the admission answer for a namespace in ``mode``.

    ``strongest`` caps every effect further (a workload's Pod template: ``warn``,
    never a denial); ``about`` says in each warning what it is about
    (``pod template``).
    """
    outcomes = []
    for match in matches:
        effect = effect_of(match.rule.action, mode)
        if effect is not None:
            # deny is the strongest action: min(effect, DENY) is effect.
            outcomes.append(Outcome(match=match, effect=effect if strongest is Action.DENY else min(effect, strongest)))
    loud = [o for o in outcomes if o.effect is not Action.ALERT]
    denials = [o for o in outcomes if o.effect is Action.DENY]
    message = _denial_message(denials, exception_hint) if denials else None
    return Decision(
        mode=mode,
        allowed=not denials,
        warnings=warning_lines([o.match for o in loud], about=about),
        message=message,
        outcomes=outcomes,
    )


def warning_line(match: Match, *, about: str | None = None) -> str:
    """``gatewatch: [T1609] Kubernetes User Exec into Pod (medium)``, at most 120 characters;
    with ``about``: ``gatewatch: pod template: [T1611,T1610] ...``."""
    return _WARNING_LINES.get(match.rule, about)  # the same text for every match of one rule object


def _warning_line(rule: Any, about: str | None) -> str:
    techniques = ",".join(rule.technique_ids) or "no ATT&CK id"
    head = f"gatewatch: {about + ': ' if about else ''}[{techniques}] "
    tail = f" ({_value(rule.severity)})"
    room = MAX_WARNING_LENGTH - len(head) - len(tail)
    name = rule.name if len(rule.name) <= room else rule.name[: max(room - 3, 0)] + "..."
    return (head + name + tail)[:MAX_WARNING_LENGTH]


_WARNING_LINES: PerObject[str] = PerObject(_warning_line)


_SUMMARY = "gatewatch: and {remaining} more rule(s) matched; see Events"
_LONGEST_SUMMARY = len(_SUMMARY) + 20  # any count of rules


def warning_lines(matches: Sequence[Match], *, about: str | None = None) -> list[str]:
    """One warning per match, at most 4,096 characters together (the rest summarized)."""
    lines: list[str] = []
    total = 0
    for index, match in enumerate(matches):
        line = warning_line(match, about=about)
        remaining = len(matches) - index
        # Keep room for the summary line should the next one not fit (worded only when it may be needed).
        if total + len(line) + _LONGEST_SUMMARY > MAX_WARNINGS_TOTAL and remaining > 1:
            summary = _SUMMARY.format(remaining=remaining)
            if total + len(line) + len(summary) > MAX_WARNINGS_TOTAL:
                lines.append(summary)
                break
        lines.append(line)
        total += len(line)
    return lines


def _denial_message(denials: Sequence[Outcome], exception_hint: str) -> str:
    parts = []
    for outcome in denials:
        rule = outcome.match.rule
        techniques = ", ".join(rule.technique_ids) or "no ATT&CK technique"
        parts.append(f"rule {rule.name!r} ({rule.id}, ATT&CK {techniques})")
    rule_ids = ", ".join(outcome.match.rule.id for outcome in denials)
    return (
        "gatewatch denied this request: matched "
        + "; ".join(parts)
        + ". "
        + exception_hint.format(rule_ids=rule_ids)
    )


def _value(value: object) -> str:
    return str(getattr(value, "value", value))
