"""Which skimmed events a rule could match: the rule index's answer, remembered by what it read.

Replay asks ``RuleEngine.may_match_audit_event`` about every event, and most
events of a log repeat a few shapes (a lease renewal, a controller's watch).
The index's answer is a function of the fields it reads, whatever they are:
this module hands the index the event behind a recorder and notes the fields
it read. Two events with the same values at every field the index has ever
read get the same answer (the index reads the same fields of both, one by
one), so the answer is remembered under those values and the index is not
asked again. Nothing here assumes which fields the index reads; when it
reads one a skim does not hold (beyond ``lines.SKIMMED_FIELDS``), the answer
is "unknown" and replay parses the line whole.

A skimmed event is a struct (``lines.SkimmedEvent``): its top-level fields are
attributes (``msgspec.UNSET``: the event has none), below them mappings or
structs of their own (``lines.ObjectRef``), which hold only their fields: the
index reading another one of them is a field the skim does not hold either.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from msgspec import UNSET, Struct

_MISSING = object()
Path = tuple[str, ...]
# Answers remembered, at most: a log has a few hundred shapes, but the index
# may read a field with a value per request (a name).
_MAX_ANSWERS = 65_536


def value_key(value: Any) -> Any:
    """What the index saw at a field: a string as it is (the usual case); anything else tagged with its
    type (True and 1 are equal, but not to the index); a container by its shape (its content is read
    field by field)."""
    if value.__class__ is str:
        return value
    if value is _MISSING:
        return ("missing",)
    if isinstance(value, (Mapping, Struct)):
        return ("object",)
    if isinstance(value, list):
        return ("list", tuple(value_key(item) for item in value))
    return (type(value), value)


class _Unknown(Exception):
    """The index read a field the skim does not hold."""


class _StructFields(dict):  # type: ignore[type-arg]
    """A struct of the skim as the index reads it: its fields that are set, and ``known``, all its fields."""

    __slots__ = ("known",)

    def __init__(self, struct: Struct) -> None:
        self.known = frozenset(struct.__struct_fields__)
        super().__init__((name, value) for name in self.known if (value := getattr(struct, name)) is not UNSET)


class _Recorder(Mapping[str, Any]):
    """A read-only view of an event that notes the path of every field read."""

    __slots__ = ("_value", "_path", "_reads", "_known")

    def __init__(self, value: Mapping[str, Any], path: Path, reads: list[Path], known: frozenset[str] | None) -> None:
        self._value, self._path, self._reads, self._known = value, path, reads, known

    def _read(self, key: Any) -> Any:
        if type(key) is not str or (self._known is not None and key not in self._known):
            raise _Unknown(key)
        path = (*self._path, key)
        self._reads.append(path)
        value = self._value.get(key, _MISSING)
        if isinstance(value, Mapping):
            return _Recorder(value, path, self._reads, getattr(value, "known", None))
        if isinstance(value, list) and any(isinstance(item, (Mapping, list)) for item in value):
            raise _Unknown(path)  # what the index reads inside would go unnoted
        return value

    def __getitem__(self, key: Any) -> Any:
        value = self._read(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._read(key)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        return self._read(key) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        raise _Unknown("every field")  # iterating reads fields no path names

    def __len__(self) -> int:
        raise _Unknown("every field")


def _answer_function(paths: list[Path], structs: Mapping[Path, type], answers: dict[tuple[Any, ...], bool],
                     learn: Callable[[Any], bool | None]) -> Callable[[Any], bool | None]:
    """``skim -> the remembered answer`` for the values at paths (value_key of each), else ``learn(skim)``:
    straight-line code, one call a line (it runs for every line of a log). ``structs``: the paths where
    the skim holds a struct, and its class (read by attribute; as a key, an object)."""
    lines = ["def may_match(event):"]
    struct_names = {path: f"S{index}" for index, path in enumerate(structs)}  # each struct class, by its path
    names: dict[Path, str] = {(): "event"}
    results = []
    for path in sorted(set(paths), key=len):
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix in names:
                continue
            parent = names[prefix[:-1]]
            name = names[prefix] = f"v{len(names)}"
            if depth == 1:  # a field of the skim: an attribute (a known one: the recorder refuses others)
                assert prefix[0].isidentifier(), prefix
                lines.append(f"    {name} = event.{prefix[0]}")
                lines.append(f"    if {name} is UNSET: {name} = MISSING")
            elif prefix[:-1] in structs:  # a field of a struct: an attribute (of its fields, as above)
                assert prefix[-1].isidentifier(), prefix
                lines.append(f"    {name} = {parent}.{prefix[-1]} if {parent}.__class__ is {struct_names[prefix[:-1]]}"
                             " else MISSING")
                lines.append(f"    if {name} is UNSET: {name} = MISSING")
            else:
                lines.append(f"    {name} = {parent}.get({prefix[-1]!r}, MISSING)"
                             f" if {parent}.__class__ is dict else MISSING")
        results.append(names[path])
    # value_key, its usual cases inline: a string, an object (read field by field), missing.
    keys = ", ".join(f"{name} if {name}.__class__ is str else (OBJECT_KEY if {name}.__class__ is "
                     f"{struct_names.get(path, 'dict')} else "
                     f"(MISSING_KEY if {name} is MISSING else value_key({name})))"
                     for name, path in zip(results, sorted(set(paths), key=len)))
    lines.append(f"    answer = answers.get(({keys},))" if keys else "    answer = answers.get(())")
    lines.append("    return learn(event) if answer is None else answer")
    scope: dict[str, Any] = {"MISSING": _MISSING, "UNSET": UNSET,
                             "MISSING_KEY": value_key(_MISSING), "OBJECT_KEY": value_key({}),
                             "value_key": value_key, "answers": answers, "learn": learn,
                             **{struct_names[path]: struct for path, struct in structs.items()}}
    exec("\n".join(lines), scope)  # noqa: S102 - source built above from the paths the index read
    return scope["may_match"]


class CandidateMemo:
    """``may_match(skim)`` for skimmed events (which hold only the ``known`` top-level fields): whether a
    rule could match the event; None when the index needs more of it than a skim holds.

    ``may_match`` is an attribute, remade when the index reads a new field: read it anew for each event.
    """

    def __init__(self, may_match: Callable[[Mapping[str, Any]], bool], *, known: frozenset[str],
                 structs: Mapping[str, type[Struct]]) -> None:
        self._ask = may_match
        self._known = known
        self._paths: list[Path] = []
        # Fixed by the skim's schema, so every answer is remembered under the same reading of every skim.
        self._structs: dict[Path, type] = {(name,): struct for name, struct in structs.items()}
        self._answers: dict[tuple[Any, ...], bool] = {}
        self.may_match = _answer_function([], self._structs, self._answers, self._learn)

    def _learn(self, skim: Any) -> bool | None:
        """The index's answer for an event unlike any before, remembered."""
        reads: list[Path] = []
        fields = _fields(skim, self._known)
        try:
            answer = self._ask(_Recorder(fields, (), reads, self._known))
        except _Unknown:
            return None
        new = [path for path in dict.fromkeys(reads) if path not in self._paths]
        if new:  # the index read something new: every answer is remembered under more values from now on
            self._paths += new
            self._answers.clear()
            self.may_match = _answer_function(self._paths, self._structs, self._answers, self._learn)
        if len(self._answers) < _MAX_ANSWERS:
            self._answers[_key(self._paths, fields)] = answer
        return answer


def _fields(skim: Any, known: frozenset[str]) -> dict[str, Any]:
    """The skim's fields as a mapping: what the event has at each known field."""
    return {name: _StructFields(value) if isinstance(value, Struct) else value
            for name in known if (value := getattr(skim, name, UNSET)) is not UNSET}


def _key(paths: list[Path], fields: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values at paths (value_key of each), as ``_answer_function`` reads them."""
    values = []
    for path in sorted(set(paths), key=len):
        value: Any = fields
        for name in path:
            value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
        values.append(value_key(value))
    return tuple(values)
