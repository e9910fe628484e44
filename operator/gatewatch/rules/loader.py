"""rules.yaml -> ``RuleSet``: validation with file, line, rule and field in every error.

The format is described in docs/rules.md. Everything a rule says is checked
here, once, at load time: keys, types, enums, ranges, ATT&CK ids and names
(against the shipped ATT&CK Enterprise table, ``gatewatch.rules.attack``), and
every query and exception is compiled, so a loaded rule set never fails while
evaluating. An ATT&CK id that is not current (revoked, deprecated, or newer
than the shipped ATT&CK version) loads as written; ``rules lint`` says why.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from gatewatch.errors import EsqlSyntaxError, GatewatchError, KqlSyntaxError, RuleError, quoted
from gatewatch.kql import compile_query
from gatewatch.rules.attack import AttackEntry, attack_data, tactic_reference, technique_reference
from gatewatch.rules.eql import eql_sequence, eql_to_ast, is_sequence
from gatewatch.rules.model import (
    ATTACK_FRAMEWORK,
    DEFAULT_SCHEDULE,
    FORMAT_VERSION,
    Action,
    Language,
    NewTerms,
    Origin,
    Rule,
    RuleSet,
    RuleType,
    Schedule,
    Severity,
    Tactic,
    Technique,
    Threat,
)
from gatewatch.sequences import compile_sequence
from gatewatch.rules.yamlsource import MAX_FILE_BYTES, LocatedList, LocatedMapping, load_located_yaml

PathLike = str | Path
E = TypeVar("E", bound=Enum)

TOP_LEVEL_KEYS = ("version", "ruleset", "description", "rules")
REQUIRED_TOP_LEVEL_KEYS = ("version", "ruleset", "rules")
REQUIRED_RULE_KEYS = ("id", "name", "description", "severity", "risk_score", "query")
RULE_KEYS = (
    "id", "name", "description", "severity", "risk_score", "type", "language", "query",
    "new_terms", "schedule", "threat", "action", "exceptions", "false_positives", "references", "tags",
    "enabled",
)
NEW_TERMS_KEYS = ("fields", "history_window")
SCHEDULE_KEYS = ("interval", "from")
THREAT_KEYS = ("framework", "tactic", "techniques")
TACTIC_KEYS = ("id", "name", "reference")
TECHNIQUE_KEYS = ("id", "name", "reference", "subtechniques")

DEFAULT_HISTORY_WINDOW = "7d"
SEQUENCE_AT_ADMISSION = "EQL sequence spans many events; replay only (never evaluated at admission)"
STATS_AT_ADMISSION = "ES|QL STATS aggregates over many events; replay only (never evaluated at admission)"
# "7d", "12h", and Elastic's history_window_start spelling "now-7d".
_DURATION = re.compile(r"^(?:now-)?(\d+)([smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Three times the longest of Elastic's 729 public KQL queries (9,863 characters).
MAX_QUERY_CHARS = 32_768
# Ids name rules in alerts, Events and metric labels: as long as a Kubernetes name at most.
MAX_RULE_ID_CHARS = 253
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_TACTIC_ID = re.compile(r"^TA\d{4}$")
_TECHNIQUE_ID = re.compile(r"^T\d{4}$")
_SUBTECHNIQUE_ID = re.compile(r"^T\d{4}\.\d{3}$")


def default_rules_path() -> Path:
    """The rules.yaml shipped in the package (``gatewatch/data/rules.yaml``)."""
    return Path(str(resources.files("gatewatch").joinpath("data/rules.yaml")))


def load_rules(paths: PathLike | Sequence[PathLike] | None = None, *, allow_empty: bool = False) -> RuleSet:
    """Load one or more rule files into one set (None: the packaged default).

    Rule ids must be unique across all files; a duplicate names both places.
    A set without an enabled rule evaluates nothing, which turns protection
    off: it is refused unless ``allow_empty``.
    """
    if paths is None:
        paths = [default_rules_path()]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise RuleError("no rule files given")
    parsed: list[_ParsedFile] = []
    for path in paths:
        file = str(path)
        parsed.append(_parse_file(_read_text(Path(path), file=file), file=file))
    return _merge(parsed, allow_empty=allow_empty)


def load_rules_text(text: str, *, file: str = "<string>", allow_empty: bool = False) -> RuleSet:
    """Load rules from YAML text; ``file`` names it in errors."""
    return _merge([_parse_file(text, file=file)], allow_empty=allow_empty)


def _read_text(path: Path, *, file: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # never more than the bound into memory
    except OSError as error:
        raise RuleError(f"cannot read rule file: {error.strerror or error}", file=file) from None
    if len(data) > MAX_FILE_BYTES:
        raise RuleError(f"the file is larger than {MAX_FILE_BYTES:,} bytes", file=file)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RuleError(f"not UTF-8 text: {error.reason} at byte {error.start}", file=file) from None


# --- files and sets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ParsedFile:
    file: str
    name: str
    version: int
    rules: tuple[Rule, ...]
    rules_line: int  # of the 'rules' key
    description: str | None = None


def _merge(files: list[_ParsedFile], *, allow_empty: bool) -> RuleSet:
    seen: dict[str, Rule] = {}
    rules: list[Rule] = []
    for parsed in files:
        for rule in parsed.rules:
            first = seen.get(rule.id)
            if first is not None:
                raise RuleError(
                    f"duplicate rule id, first defined at {first.origin}",
                    file=parsed.file,
                    line=rule.origin.line if rule.origin else None,
                    rule_id=rule.id,
                    field="id",
                )
            seen[rule.id] = rule
            rules.append(rule)
    if not allow_empty and not any(rule.enabled for rule in rules):
        what = f"all {len(rules)} rule(s) are disabled" if rules else "no rules"
        raise RuleError(
            f"{what}: nothing would be evaluated, which turns protection off; "
            "if that is meant, allow an empty rule set (rules.allowEmpty, --allow-empty-rules)",
            file=", ".join(parsed.file for parsed in files),
            line=files[0].rules_line if len(files) == 1 else None,
        )
    names = list(dict.fromkeys(parsed.name for parsed in files))
    return RuleSet(
        name="+".join(names),
        version=FORMAT_VERSION,
        rules=tuple(rules),
        sources=tuple(parsed.file for parsed in files),
        description=files[0].description if len(files) == 1 else None,
    )


def _parse_file(text: str, *, file: str) -> _ParsedFile:
    try:
        return _read_file_data(load_located_yaml(text, file=file), file=file)
    except RecursionError:  # the bounds should make this unreachable; still a rule error, never a crash
        raise RuleError("nested too deeply to load", file=file) from None


def _read_file_data(data: Any, *, file: str) -> _ParsedFile:
    if data is None:
        raise RuleError("empty rule file: expected 'version', 'ruleset' and 'rules'", file=file, line=1)
    if not isinstance(data, LocatedMapping):
        raise RuleError("the top level must be a mapping with 'version', 'ruleset' and 'rules'", file=file, line=1)
    _reject_unknown_keys(data, TOP_LEVEL_KEYS, file=file, rule_id=None, prefix="")
    for key in REQUIRED_TOP_LEVEL_KEYS:
        if key not in data:
            raise RuleError(f"missing top-level key {quoted(key)}", file=file, line=data.line)
    version = data["version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise RuleError(
            f"unsupported format version {quoted(version)}: this gatewatch reads version {FORMAT_VERSION}",
            file=file, line=data.value_line("version"), field="version",
        )
    name = data["ruleset"]
    if not isinstance(name, str) or not name.strip():
        raise RuleError("must be a non-empty string", file=file, line=data.value_line("ruleset"), field="ruleset")
    description = data.get("description")
    if description is not None and (not isinstance(description, str) or not description.strip()):
        raise RuleError(
            "must be a non-empty string", file=file, line=data.value_line("description"), field="description"
        )
    raw_rules = data["rules"]
    if raw_rules is None:
        raw_rules = LocatedList()
        raw_rules.line, raw_rules.item_lines = data.value_line("rules"), []
    if not isinstance(raw_rules, LocatedList):
        raise RuleError("must be a list of rules", file=file, line=data.value_line("rules"), field="rules")
    rules = []
    for index, raw in enumerate(raw_rules):
        line = raw_rules.item_line(index)
        if not isinstance(raw, LocatedMapping):
            raise RuleError(f"rule #{index + 1} must be a mapping", file=file, line=line)
        rules.append(_RuleReader(raw, file=file, ruleset=name.strip()).read())
    return _ParsedFile(file=file, name=name.strip(), version=version, rules=tuple(rules),
                       rules_line=data.key_line("rules"),
                       description=description.strip() if description else None)


def _reject_unknown_keys(
    mapping: LocatedMapping, allowed: Sequence[str], *, file: str, rule_id: str | None, prefix: str
) -> None:
    for key in mapping:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RuleError(
            f"unknown key{hint}; allowed: {', '.join(allowed)}",
            file=file, line=mapping.key_line(key), rule_id=rule_id, field=f"{prefix}{key}",
        )


# --- one rule -----------------------------------------------------------------------


class _RuleReader:
    """Reads and checks one rule mapping; every error names file, line, rule and field."""

    def __init__(self, raw: LocatedMapping, *, file: str, ruleset: str) -> None:
        self.raw = raw
        self.file = file
        self.ruleset = ruleset
        self.rule_id: str | None = None

    def error(self, reason: str, *, field: str, line: int | None = None) -> RuleError:
        return RuleError(reason, file=self.file, line=line or self.raw.line, rule_id=self.rule_id, field=field)

    def read(self) -> Rule:
        raw = self.raw
        self.rule_id = self._rule_id()
        _reject_unknown_keys(raw, RULE_KEYS, file=self.file, rule_id=self.rule_id, prefix="")
        for key in REQUIRED_RULE_KEYS:
            if key not in raw:
                raise self.error("missing required field", field=key)
        rule_type = self._enum("type", RuleType, default=RuleType.QUERY)
        language = self._enum("language", Language, default=Language.KUERY)
        query = self._string("query")
        new_terms = self._new_terms(rule_type)
        exceptions = self._string_list("exceptions")
        matcher = self._compile(query, language=language, field="query", line=raw.text_line("query"))
        return Rule(
            id=self.rule_id,
            name=self._string("name"),
            description=self._string("description"),
            severity=self._enum("severity", Severity),
            risk_score=self._risk_score(),
            type=rule_type,
            language=language,
            query=query,
            matcher=matcher,
            new_terms=new_terms,
            schedule=self._schedule(aggregates=bool(getattr(matcher, "aggregates", False))),
            threat=self._threats(),
            action=self._enum("action", Action, default=Action.ALERT),
            exceptions=exceptions,
            exception_matchers=tuple(
                self._compile(
                    text, language=Language.KUERY, field=f"exceptions[{index}]",
                    line=raw["exceptions"].item_line(index),
                )
                for index, text in enumerate(exceptions)
            ),
            false_positives=self._string_list("false_positives"),
            references=self._string_list("references"),
            tags=self._string_list("tags"),
            enabled=self._bool("enabled", default=True),
            ruleset=self.ruleset,
            origin=Origin(self.file, raw.line),
        )

    # -- scalars

    def _rule_id(self) -> str | None:
        if "id" not in self.raw:
            raise self.error("missing required field", field="id")
        value = self.raw["id"]
        line = self.raw.value_line("id")
        if not isinstance(value, str) or not _RULE_ID.match(value) or len(value) > MAX_RULE_ID_CHARS:
            raise self.error(
                f"must be a string of at most {MAX_RULE_ID_CHARS} letters, digits and . _ : - (got {quoted(value)})",
                field="id", line=line,
            )
        return value

    def _string(self, key: str) -> str:
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"must be a non-empty string (got {quoted(value)})", field=key, line=self.raw.value_line(key))
        return value.strip()

    def _bool(self, key: str, *, default: bool) -> bool:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if not isinstance(value, bool):
            raise self.error(f"must be true or false (got {quoted(value)})", field=key, line=self.raw.value_line(key))
        return value

    def _enum(self, key: str, enum: type[E], *, default: E | None = None) -> E:
        if key not in self.raw and default is not None:
            return default
        value = self.raw[key]
        choices = ", ".join(member.value for member in enum)  # type: ignore[attr-defined]
        try:
            return enum(value)
        except ValueError:
            raise self.error(
                f"must be one of {choices} (got {quoted(value)})", field=key, line=self.raw.value_line(key)
            ) from None

    def _risk_score(self) -> int:
        value = self.raw["risk_score"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise self.error(
                f"must be an integer from 0 to 100 (got {quoted(value)})",
                field="risk_score", line=self.raw.value_line("risk_score"),
            )
        return value

    def _string_list(self, key: str, mapping: LocatedMapping | None = None, *, prefix: str = "") -> tuple[str, ...]:
        mapping = self.raw if mapping is None else mapping
        if key not in mapping or mapping[key] is None:
            return ()
        items = mapping[key]
        if not isinstance(items, LocatedList):
            raise self.error("must be a list of strings", field=prefix + key, line=mapping.value_line(key))
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise self.error(
                    f"item {index + 1} must be a non-empty string (got {quoted(item)})",
                    field=f"{prefix}{key}[{index}]", line=items.item_line(index),
                )
        return tuple(item.strip() for item in items)

    # -- queries

    def _compile(self, text: str, *, language: Language, field: str, line: int) -> Any:
        if len(text) > MAX_QUERY_CHARS:  # parsing costs about 25 µs a character
            raise self.error(f"longer than {MAX_QUERY_CHARS:,} characters ({len(text):,})", field=field, line=line)
        compiled: Any
        try:
            if language is Language.EQL and is_sequence(text):
                compiled = compile_sequence(eql_sequence(text), source=text)
            elif language is Language.EQL:
                compiled = compile_query(eql_to_ast(text), source=text)
            elif language is Language.ESQL:
                # Imported for the first ES|QL rule only: the package is ~4 MiB of resident memory
                # that a rule set without ES|QL (the default one) never needs (issue #12).
                from gatewatch.esql import compile_esql

                compiled = compile_esql(text)
            else:
                compiled = compile_query(text)
        except KqlSyntaxError as error:  # EqlSyntaxError and EsqlSyntaxError are ones too
            kind = {Language.EQL: "EQL", Language.ESQL: "ES|QL"}.get(language, "KQL")
            if isinstance(error, EsqlSyntaxError) and error.unsupported:
                kind, label = "unsupported ES|QL", "at"
            else:
                label = "syntax error at"
            raise self.error(
                f"{kind} {label} query line {error.line}, column {error.column}: {error.reason}\n"
                f"    {error.excerpt}\n    {error.caret}",
                field=field,
                line=line + error.line - 1,
            ) from None
        except GatewatchError as error:
            raise self.error(f"cannot compile: {error}", field=field, line=line) from None
        return compiled

    def _schedule(self, *, aggregates: bool) -> Schedule | None:
        """``schedule: {interval, from}``; a STATS rule without one gets Elastic's defaults."""
        raw = self.raw.get("schedule")
        if raw is None:
            return DEFAULT_SCHEDULE if aggregates else None
        if not isinstance(raw, LocatedMapping):
            raise self.error("must be a mapping with interval and from", field="schedule",
                             line=self.raw.value_line("schedule"))
        _reject_unknown_keys(raw, SCHEDULE_KEYS, file=self.file, rule_id=self.rule_id, prefix="schedule.")
        interval = self._duration(raw, "interval", default=DEFAULT_SCHEDULE.interval)
        lookback = self._duration(raw, "from", default=DEFAULT_SCHEDULE.lookback)
        return Schedule(interval=interval, lookback=lookback)

    def _duration(self, raw: LocatedMapping, key: str, *, default: timedelta) -> timedelta:
        if key not in raw:
            return default
        text = raw[key]
        match = _DURATION.match(text.strip()) if isinstance(text, str) else None
        if match is None or int(match.group(1)) == 0:
            raise self.error(
                f"must be a positive duration like 5m, 1h or now-6m (got {text!r})",
                field=f"schedule.{key}", line=raw.value_line(key),
            )
        return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})

    def _new_terms(self, rule_type: RuleType) -> NewTerms | None:
        raw = self.raw.get("new_terms")
        if rule_type is not RuleType.NEW_TERMS:
            if raw is not None:
                raise self.error(
                    "only a rule of type new_terms may have new_terms", field="new_terms",
                    line=self.raw.key_line("new_terms"),
                )
            return None
        if raw is None:
            raise self.error("a new_terms rule needs new_terms.fields", field="new_terms")
        if not isinstance(raw, LocatedMapping):
            raise self.error(
                "must be a mapping with fields and history_window", field="new_terms",
                line=self.raw.value_line("new_terms"),
            )
        _reject_unknown_keys(raw, NEW_TERMS_KEYS, file=self.file, rule_id=self.rule_id, prefix="new_terms.")
        fields = self._string_list("fields", raw, prefix="new_terms.")
        if not fields:
            raise self.error("must list at least one field", field="new_terms.fields", line=raw.line)
        if len(set(fields)) != len(fields):
            raise self.error("lists a field twice", field="new_terms.fields", line=raw.value_line("fields"))
        window_text = raw.get("history_window", DEFAULT_HISTORY_WINDOW)
        match = _DURATION.match(str(window_text).strip()) if isinstance(window_text, str) else None
        if match is None or int(match.group(1)) == 0:
            raise self.error(
                f"must be a positive duration like 7d, 12h, 30m, 2w or now-7d (got {quoted(window_text)})",
                field="new_terms.history_window", line=raw.value_line("history_window"),
            )
        window = timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
        return NewTerms(fields=fields, history_window=window)

    # -- ATT&CK

    def _threats(self) -> tuple[Threat, ...]:
        raw = self.raw.get("threat")
        if raw is None:
            return ()
        if not isinstance(raw, LocatedList):
            raise self.error("must be a list of ATT&CK entries", field="threat", line=self.raw.value_line("threat"))
        return tuple(self._threat(item, index=index, line=raw.item_line(index)) for index, item in enumerate(raw))

    def _threat(self, raw: Any, *, index: int, line: int) -> Threat:
        where = f"threat[{index}]"
        if not isinstance(raw, LocatedMapping):
            raise self.error("must be a mapping with framework, tactic and techniques", field=where, line=line)
        _reject_unknown_keys(raw, THREAT_KEYS, file=self.file, rule_id=self.rule_id, prefix=f"{where}.")
        framework = raw.get("framework", ATTACK_FRAMEWORK)
        if framework != ATTACK_FRAMEWORK:
            raise self.error(
                f"must be {ATTACK_FRAMEWORK!r} (got {quoted(framework)})", field=f"{where}.framework",
                line=raw.value_line("framework"),
            )
        if "tactic" not in raw:
            raise self.error("missing required field", field=f"{where}.tactic", line=raw.line)
        tactic_raw = self._mapping(raw, "tactic", TACTIC_KEYS, where=f"{where}.tactic")
        entry = self._attack_entry(
            tactic_raw, where=f"{where}.tactic", pattern=_TACTIC_ID, kind="tactic",
            lookup=attack_data().tactic, id_format="TA followed by 4 digits",
        )
        techniques_raw = raw.get("techniques") or LocatedList()
        if not isinstance(techniques_raw, LocatedList):
            raise self.error("must be a list", field=f"{where}.techniques", line=raw.value_line("techniques"))
        techniques = tuple(
            self._technique(item, where=f"{where}.techniques[{position}]", line=techniques_raw.item_line(position))
            for position, item in enumerate(techniques_raw)
        )
        return Threat(
            framework=ATTACK_FRAMEWORK,
            tactic=Tactic(id=entry.id, name=tactic_raw.get("name", entry.name), reference=entry.reference),
            techniques=techniques,
        )

    def _technique(self, raw: Any, *, where: str, line: int, parent: str | None = None) -> Technique:
        if not isinstance(raw, LocatedMapping):
            raise self.error("must be a mapping with id, name and reference", field=where, line=line)
        _reject_unknown_keys(
            raw, TECHNIQUE_KEYS if parent is None else TACTIC_KEYS,
            file=self.file, rule_id=self.rule_id, prefix=f"{where}.",
        )
        entry = self._attack_entry(
            raw, where=where, kind="technique" if parent is None else "sub-technique",
            pattern=_TECHNIQUE_ID if parent is None else _SUBTECHNIQUE_ID,
            lookup=attack_data().technique,
            id_format="T followed by 4 digits" if parent is None else f"{parent}.NNN",
        )
        if parent is not None and not entry.id.startswith(parent + "."):
            raise self.error(
                f"sub-technique {entry.id} does not belong to technique {parent}", field=f"{where}.id",
                line=raw.value_line("id"),
            )
        subs_raw = raw.get("subtechniques") or LocatedList()
        if not isinstance(subs_raw, LocatedList):
            raise self.error("must be a list", field=f"{where}.subtechniques", line=raw.value_line("subtechniques"))
        subtechniques = tuple(
            self._technique(
                item, where=f"{where}.subtechniques[{position}]", line=subs_raw.item_line(position), parent=entry.id
            )
            for position, item in enumerate(subs_raw)
        )
        return Technique(
            id=entry.id, name=raw.get("name", entry.name), reference=entry.reference, subtechniques=subtechniques
        )

    def _mapping(self, parent: LocatedMapping, key: str, allowed: Sequence[str], *, where: str) -> LocatedMapping:
        value = parent[key]
        if not isinstance(value, LocatedMapping):
            raise self.error("must be a mapping with id, name and reference", field=where, line=parent.value_line(key))
        _reject_unknown_keys(value, allowed, file=self.file, rule_id=self.rule_id, prefix=f"{where}.")
        return value

    def _attack_entry(
        self,
        raw: LocatedMapping,
        *,
        where: str,
        kind: str,
        pattern: re.Pattern[str],
        lookup: Callable[[str], AttackEntry | None],
        id_format: str,
    ) -> AttackEntry:
        """Check id and reference of a tactic/technique against the shipped ATT&CK data.

        The id is what counts. A rule's own name for it is kept even where ATT&CK
        names it differently (ATT&CK renames: Elastic's rules say "Stealth" for
        TA0005 ahead of the shipped version); ``rules lint`` points the difference
        out. An id that is not current (revoked, deprecated, or newer than the
        shipped ATT&CK) is taken as written, named by the rule or by ATT&CK's last
        name for it; an unknown id needs a name.
        """
        if "id" not in raw:
            raise self.error("missing required field", field=f"{where}.id", line=raw.line)
        attack_id = raw["id"]
        id_line = raw.value_line("id")
        if not isinstance(attack_id, str) or not pattern.match(attack_id):
            raise self.error(f"ATT&CK {kind} id must be {id_format} (got {quoted(attack_id)})", field=f"{where}.id", line=id_line)
        name = raw.get("name")
        if "name" in raw and (not isinstance(name, str) or not name.strip()):
            raise self.error(f"must be a non-empty string (got {quoted(name)})", field=f"{where}.name", line=raw.value_line("name"))
        entry = lookup(attack_id)
        if entry is None:
            data = attack_data()
            written = name.strip() if isinstance(name, str) else None
            former = data.resolve_technique(attack_id).old_name if kind != "tactic" else None
            if written is None and former is None:
                raise self.error(
                    f"ATT&CK {kind} {attack_id} is not in ATT&CK Enterprise v{data.version} "
                    "(gatewatch's ATT&CK data): give its name",
                    field=f"{where}.id", line=id_line,
                )
            reference = tactic_reference(attack_id) if kind == "tactic" else technique_reference(attack_id)
            entry = AttackEntry(attack_id, written or former or attack_id, reference)
        if "reference" in raw:
            reference = raw["reference"]
            if not isinstance(reference, str) or reference.rstrip("/") != entry.reference.rstrip("/"):
                raise self.error(
                    f"the reference of {attack_id} is {entry.reference!r}, not {quoted(reference)}",
                    field=f"{where}.reference", line=raw.value_line("reference"),
                )
        return entry
