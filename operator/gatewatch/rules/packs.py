"""Rule packs: rule files shipped with gatewatch, chosen by name.

A pack is a rules.yaml-format file in ``gatewatch/data/packs/``, named by its
file name (``pod-security-baseline``). ``gatewatch rules packs`` lists them;
``--pack NAME`` (check, replay, run) and the chart's ``rules.packs`` add them
beside the rule files. A selection may set every rule of a pack to one action
(``pod-security-baseline=warn``), and the packs may be given PSA-style
exemptions: requests by some users, in some namespaces or for Pods of some
runtime classes are exempt from every pack rule (docs/pod-security.md).

Exemptions become KQL exceptions of the pack's rules, so they take effect
where every exception does (the engine: an excepted match is no match), in
the webhook, ``check`` and ``replay`` alike.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gatewatch.errors import GatewatchError
from gatewatch.kql import compile_query
from gatewatch.rules.loader import PathLike, default_rules_path, load_rules
from gatewatch.rules.model import Action, Rule, RuleSet

PACK_SUFFIX = ".yaml"
# The tag naming the Pod Security Standards control a rule checks: "Pod Security: baseline/capabilities".
CONTROL_TAG_PREFIX = "Pod Security: "
# The fields the exemptions compare, as Pod Security Admission does: the
# requesting user (at admission the effective one, after impersonation), the
# namespace, and the Pod's spec.runtimeClassName.
EXEMPT_USER_FIELD = "gatewatch.user.effective"
EXEMPT_NAMESPACE_FIELD = "orchestrator.namespace"
EXEMPT_RUNTIME_CLASS_FIELD = "kubernetes.audit.requestObject.spec.runtimeClassName"


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    path: Path
    description: str | None
    rule_count: int


@dataclass(frozen=True, slots=True)
class PackSelection:
    """A pack to load, and the action every one of its rules gets (None: as written)."""

    name: str
    action: Action | None = None

    @classmethod
    def parse(cls, text: str) -> PackSelection:
        """``NAME`` or ``NAME=ACTION`` (the ``--pack`` option)."""
        name, _, action = text.partition("=")
        name = name.strip()
        if not name:
            raise GatewatchError(f"--pack {text!r}: a pack name is missing")
        if not action:
            return cls(name)
        try:
            return cls(name, Action(action.strip().lower()))
        except ValueError:
            choices = ", ".join(item.value for item in Action)
            raise GatewatchError(f"--pack {text!r}: the action must be one of {choices}") from None


@dataclass(frozen=True, slots=True)
class Exemptions:
    """Who and what the packs leave alone; the meaning of PSA's AdmissionConfiguration ``exemptions``."""

    usernames: tuple[str, ...] = ()
    runtime_class_names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.usernames or self.runtime_class_names or self.namespaces)

    def exceptions(self) -> tuple[str, ...]:
        """The KQL exceptions that say the same."""
        return tuple(
            f"{field}:({' or '.join(_quoted(value) for value in values)})"
            for field, values in (
                (EXEMPT_USER_FIELD, self.usernames),
                (EXEMPT_NAMESPACE_FIELD, self.namespaces),
                (EXEMPT_RUNTIME_CLASS_FIELD, self.runtime_class_names),
            )
            if values
        )


def control_tags(rule: Rule) -> list[str]:
    """The rule's Pod Security control tags (``Pod Security: baseline/capabilities``)."""
    return [tag for tag in rule.tags if tag.startswith(CONTROL_TAG_PREFIX)]


def _quoted(value: str) -> str:
    # A quoted KQL value: only \ and " need escaping (docs/rules.md#kql-support).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def packs_directory() -> Path:
    return Path(str(resources.files("gatewatch").joinpath("data/packs")))


def available_packs() -> list[Pack]:
    """The packs shipped with gatewatch, by name."""
    packs = []
    for path in sorted(packs_directory().glob(f"*{PACK_SUFFIX}")):
        ruleset = load_rules(path)
        packs.append(Pack(name=path.stem, path=path, description=ruleset.description, rule_count=len(ruleset)))
    return packs


def pack_names() -> list[str]:
    return sorted(path.stem for path in packs_directory().glob(f"*{PACK_SUFFIX}"))


def pack_path(name: str) -> Path:
    """The file of the pack ``name``; GatewatchError naming the packs there are when there is none."""
    path = packs_directory() / f"{name}{PACK_SUFFIX}"
    if "/" in name or name.startswith(".") or not path.is_file():
        raise GatewatchError(f"unknown rule pack {name!r}; the packs are: {', '.join(pack_names()) or 'none'}")
    return path


def load_ruleset(
    files: Sequence[PathLike] | None = None,
    *,
    packs: Iterable[PackSelection] = (),
    exemptions: Exemptions | None = None,
    allow_empty: bool = False,
) -> RuleSet:
    """Rule files (None or empty: the packaged rules.yaml) and then the selected packs, as one set.

    Rule ids are unique across all of them. A pack selected twice is loaded
    once (the last selection's action wins). ``allow_empty``: as ``load_rules``.
    """
    selections = {selection.name: selection for selection in packs}
    paths = {name: pack_path(name) for name in selections}
    base = list(files) if files else None
    if not paths:
        return load_rules(base, allow_empty=allow_empty)
    ruleset = load_rules([*(base or [default_rules_path()]), *paths.values()], allow_empty=allow_empty)
    pack_files = {str(path): selections[name] for name, path in paths.items()}
    extra = exemptions.exceptions() if exemptions else ()
    rules = tuple(
        _as_selected(rule, pack_files[rule.origin.file], extra)
        if rule.origin is not None and rule.origin.file in pack_files
        else rule
        for rule in ruleset.rules
    )
    return dataclasses.replace(ruleset, rules=rules)


def _as_selected(rule: Rule, selection: PackSelection, exceptions: tuple[str, ...]) -> Rule:
    changes: dict[str, object] = {}
    if selection.action is not None:
        changes["action"] = selection.action
    if exceptions:
        changes["exceptions"] = rule.exceptions + exceptions
        changes["exception_matchers"] = rule.exception_matchers + tuple(compile_query(text) for text in exceptions)
    return dataclasses.replace(rule, **changes) if changes else rule
