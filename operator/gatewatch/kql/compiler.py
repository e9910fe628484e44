"""Syntax tree -> one Python callable per query: ``document -> bool``.

Everything that can be decided once is decided at compile time: field paths are
split, each value becomes the cheapest test for it (a string compare or set
lookup for literals, ``startswith``/``endswith``/``in`` or a linear-time glob
for wildcards (``kql.glob``), a parsed number / IP network / date for the rest), and matches on
one field inside an ``or`` share a single lookup. Evaluating a document only
calls closures; nothing walks the tree.

Semantics follow Elasticsearch on keyword fields (case-sensitive), with the
value also read as a number, boolean, IP address or CIDR block when it looks
like one: ``a:10`` matches 10 and "10", ``a:true`` matches True and "true",
``ip:10.0.0.0/8`` matches "10.1.2.3". A field holding a list matches when any
element does; ``not a:x`` is true when no element is x (or ``a`` is absent).
"""
from __future__ import annotations

import ipaddress
import operator as op
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, TypeAlias

from gatewatch.kql.ast import And, Exists, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard
from gatewatch.kql.fields import Resolver, resolver_for
from gatewatch.kql.glob import glob_matcher
from gatewatch.errors import KqlRenderError
from gatewatch.kql.parser import parse, to_kql

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
ValueTest: TypeAlias = Callable[[Any], bool]
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class CompiledQuery:
    """A compiled KQL query: call it with a document to get ``True`` on a match.

    ``query`` is the KQL text, ``fields`` the field names it references (as
    written, wildcards included; inside ``a:{ b:x }`` the field is ``a.b``),
    ``node`` the syntax tree.

    The closures are built on the first call: a loaded rule set runs as
    generated code (``kql.codegen``), so most rules' closures are never needed,
    and 1,000 rules' would take 4 MiB and a third of the load time.
    """

    __slots__ = ("query", "fields", "node", "_matches")

    def __init__(self, *, query: str, fields: frozenset[str], node: Node, matches: Predicate | None = None) -> None:
        self.query = query
        self.fields = fields
        self.node = node
        self._matches = matches

    def __call__(self, document: Mapping[str, Any]) -> bool:
        matches = self._matches
        if matches is None:
            matches = self._matches = compile_predicate(self.node)
        return matches(document)

    def __repr__(self) -> str:
        return f"CompiledQuery({self.query!r})"


def compile_query(query: str | Node, *, source: str | None = None) -> CompiledQuery:
    """Compile KQL text (or a syntax tree) into a ``CompiledQuery``.

    Raises ``KqlSyntaxError`` for text that does not parse. For a tree, ``query``
    is ``source`` when given (e.g. the EQL it was imported from), else the tree
    rendered as KQL (case-insensitive matches shown case-sensitive).
    """
    if isinstance(query, str):
        node, text = parse(query), query
    else:
        node = query
        text = source if source is not None else _render_lenient(node)
    return CompiledQuery(query=text, fields=frozenset(referenced_fields(node)), node=node)


def _render_lenient(node: Node) -> str:
    try:
        return to_kql(node)
    except KqlRenderError:
        return to_kql(node, strict=False)


def referenced_fields(node: Node, prefix: str = "") -> set[str]:
    """Field names a tree refers to (nested ones joined to their parent)."""
    if isinstance(node, (Or, And)):
        return set().union(*(referenced_fields(item, prefix) for item in node.items))
    if isinstance(node, Not):
        return referenced_fields(node.item, prefix)
    if isinstance(node, Nested):
        return {prefix + node.field} | referenced_fields(node.query, f"{prefix}{node.field}.")
    if isinstance(node, (Term, Wildcard, Exists, Range)) and node.field is not None:
        return {prefix + node.field}
    return set()


# --- tree -> predicate ----------------------------------------------------------


def compile_predicate(node: Node) -> Predicate:
    """The tree as nested closures: the reference evaluator (``kql.codegen`` must agree with it)."""
    if isinstance(node, Or):
        return _compile_or(node)
    if isinstance(node, And):
        items = tuple(compile_predicate(item) for item in node.items)
        if len(items) == 2:
            first, second = items
            return lambda document: first(document) and second(document)

        def all_match(document: Mapping[str, Any]) -> bool:
            for item in items:
                if not item(document):
                    return False
            return True

        return all_match
    if isinstance(node, Not):
        inner = compile_predicate(node.item)
        return lambda document: not inner(document)
    if isinstance(node, (Term, Wildcard)):
        return _compile_field_matches(node.field, [node])
    if isinstance(node, Exists):
        resolve = _resolver(node.field)
        return lambda document: any(map(is_present, resolve(document)))
    if isinstance(node, Range):
        resolve = _resolver(node.field)
        test = range_test(node.operator, node.value)
        return lambda document: any(map(test, resolve(document)))
    if isinstance(node, Nested):
        resolve = _resolver(node.field)
        inner = compile_predicate(node.query)

        def some_element(document: Mapping[str, Any]) -> bool:
            for element in resolve(document):
                # dict first: the Mapping ABC check costs more, and nested lists hold dicts.
                if (element.__class__ is dict or isinstance(element, Mapping)) and inner(element):
                    return True
            return False

        return some_element
    if isinstance(node, MatchAll):
        return lambda document: True
    raise TypeError(f"not a KQL node: {node!r}")


def group_or_by_field(node: Or) -> tuple[dict[str | None, list[Term | Wildcard]], list[Node]]:
    """An ``or``'s value matches grouped by field (each group is one lookup and one combined
    value test), and its other items."""
    by_field: dict[str | None, list[Term | Wildcard]] = {}
    others: list[Node] = []
    for item in node.items:
        if isinstance(item, (Term, Wildcard)):
            by_field.setdefault(item.field, []).append(item)
        else:
            others.append(item)
    return by_field, others


def _compile_or(node: Or) -> Predicate:
    by_field, others = group_or_by_field(node)
    items = tuple(
        [_compile_field_matches(field, matches) for field, matches in by_field.items()]
        + [compile_predicate(item) for item in others]
    )
    if len(items) == 1:
        return items[0]

    def any_match(document: Mapping[str, Any]) -> bool:
        for item in items:
            if item(document):
                return True
        return False

    return any_match


def _compile_field_matches(field: str | None, matches: list[Term | Wildcard]) -> Predicate:
    """True when a value of ``field`` matches any of ``matches``."""
    resolve = _resolver(field)
    if len(matches) == 1 and isinstance(matches[0], Term) and is_plain_term(matches[0]):
        value = matches[0].value
        return lambda document: value in resolve(document)  # list membership: == per element
    test = any_value_test(matches)
    return lambda document: any(map(test, resolve(document)))


def _resolver(field: str | None) -> Resolver:
    return resolver_for(field)


def is_present(value: Any) -> bool:
    """What ``field:*`` asks of a value: anything but an empty object."""
    return not (isinstance(value, Mapping) and not value)


# --- value tests ----------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_BOOLEANS = {"true": True, "false": False}


def _as_number(text: str) -> int | float | None:
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _as_ip(text: str) -> IPAddress | None:
    """The IP address in ``text`` (IPv4-mapped IPv6 read as IPv4), else None."""
    if len(text) > 64 or not _IP_LIKE.fullmatch(text):
        return None  # cheaply not an address; such strings stay out of the cache
    return _parse_ip(text)


# Dotted digits (IPv4) or hex with a colon (IPv6, maybe embedding IPv4, maybe with a %zone).
_IP_LIKE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?")


@lru_cache(maxsize=65536)
def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _as_network(text: str) -> IPNetwork | None:
    """An IP address or CIDR block as a network (an address is a /32 or /128)."""
    address, slash, prefix = text.partition("/")
    ip = _as_ip(address)
    if ip is None:
        return None
    try:
        return ipaddress.ip_network(f"{ip}/{prefix}" if slash else str(ip), strict=False)
    except ValueError:
        return None


def keyword_text(value: Any) -> str | None:
    """A scalar as a keyword field would store it (what wildcards are matched on); None for objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def is_plain_term(term: Term) -> bool:
    """A case-sensitive term with no number / boolean / IP reading: a bare string compare."""
    value = term.value
    return (
        not term.case_insensitive
        and value not in _BOOLEANS
        and _as_number(value) is None
        and _as_network(value) is None
    )


def any_value_test(matches: list[Term | Wildcard]) -> ValueTest:
    """One test for ``any(match(value) for match in matches)``, merged where possible.

    The one definition of what a single value of a field must be for a match on
    it to hold; compiled queries and the rule index (``gatewatch.prefilter``) both use it.
    """
    exact: set[str] = set()
    patterns: list[tuple[str, ...]] = []
    tests: list[ValueTest] = []
    for match in matches:
        if isinstance(match, Term) and is_plain_term(match):
            exact.add(match.value)
        elif isinstance(match, Wildcard) and not match.case_insensitive:
            patterns.append(match.parts)
        elif isinstance(match, Term):
            tests.append(_term_test(match.value, case_insensitive=match.case_insensitive))
        else:
            tests.append(_wildcard_test(match.parts, case_insensitive=True))
    merged: list[ValueTest] = []
    if exact:
        members = frozenset(exact)
        merged.append(lambda value: isinstance(value, str) and value in members)
    if patterns:
        merged.append(_wildcards_test(patterns))
    tests = merged + tests
    if len(tests) == 1:
        return tests[0]
    all_tests = tuple(tests)
    return lambda value: any(test(value) for test in all_tests)


def _term_test(value: str, *, case_insensitive: bool) -> ValueTest:
    """Equality with ``value`` read as text, and as a number / boolean / IP when it is one."""
    number = _as_number(value)
    boolean = _BOOLEANS.get(value.lower() if case_insensitive else value)
    network = _as_network(value)
    folded = value.casefold()

    def text_matches(text: str) -> bool:
        if (text.casefold() == folded) if case_insensitive else (text == value):
            return True
        if network is None:
            return False
        address = _as_ip(text)
        return address is not None and address.version == network.version and address in network

    def test(candidate: Any) -> bool:
        if isinstance(candidate, str):
            return text_matches(candidate)
        if isinstance(candidate, bool):
            return candidate is boolean
        if isinstance(candidate, (int, float)):
            return number is not None and candidate == number
        return False

    return test


def _wildcards_test(patterns: list[tuple[str, ...]]) -> ValueTest:
    """Case-sensitive wildcard patterns, grouped by shape: one ``startswith`` for all
    prefixes, one ``endswith`` for all suffixes, ``in`` for infixes, a glob for the rest."""
    if len(patterns) == 1:
        return _wildcard_test(patterns[0], case_insensitive=False)
    prefixes = tuple(parts[0] for parts in patterns if len(parts) == 2 and not parts[1])
    suffixes = tuple(parts[1] for parts in patterns if len(parts) == 2 and not parts[0] and parts[1])
    infixes = tuple(parts[1] for parts in patterns if len(parts) == 3 and not parts[0] and not parts[2])
    shaped = {("", suffix) for suffix in suffixes} | {(prefix, "") for prefix in prefixes}
    shaped |= {("", infix, "") for infix in infixes}
    globs = tuple(glob_matcher(parts) for parts in patterns if parts not in shaped)

    def text_test(text: str) -> bool:
        if prefixes and text.startswith(prefixes):
            return True
        if suffixes and text.endswith(suffixes):
            return True
        for infix in infixes:
            if infix in text:
                return True
        for glob in globs:
            if glob(text):
                return True
        return False

    return _on_text(text_test)


def _wildcard_test(parts: tuple[str, ...], *, case_insensitive: bool) -> ValueTest:
    return _on_text(glob_matcher(parts, case_insensitive=case_insensitive))


def _on_text(text_test: Callable[[str], bool]) -> ValueTest:
    """Apply a string test to strings, and to numbers / booleans as keyword text."""

    def test(candidate: Any) -> bool:
        if isinstance(candidate, str):
            return text_test(candidate)
        text = keyword_text(candidate)
        return text is not None and text_test(text)

    return test


# --- ranges ---------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {"<": op.lt, "<=": op.le, ">": op.gt, ">=": op.ge}


def range_test(operator: str, bound_text: str) -> ValueTest:
    """``value <op> bound``: numeric, IP, date (ISO 8601 or ``now`` math) or string order."""
    compare = _COMPARE[operator]

    number = _as_number(bound_text)
    if number is not None:

        def numeric(candidate: Any) -> bool:
            if isinstance(candidate, bool):
                return False
            if isinstance(candidate, str):
                candidate = _as_number(candidate.strip())
            return isinstance(candidate, (int, float)) and compare(candidate, number)

        return numeric

    address = _as_ip(bound_text)
    if address is not None:

        def ip_order(candidate: Any) -> bool:
            other = _as_ip(candidate) if isinstance(candidate, str) else None
            return other is not None and other.version == address.version and compare(other, address)

        return ip_order

    now_bound = _date_math(bound_text, round_up=operator in (">", "<="))
    date = None if now_bound is not None else _as_date(bound_text)
    if now_bound is not None or date is not None:

        def date_order(candidate: Any) -> bool:
            when = _as_date(candidate) if isinstance(candidate, str) else None
            if when is None:
                return False
            return compare(when, now_bound() if now_bound is not None else date)

        return date_order

    def text_order(candidate: Any) -> bool:
        return isinstance(candidate, str) and compare(candidate, bound_text)

    return text_order


def _as_date(text: str) -> datetime | None:
    """An ISO 8601 date or date-time (naive ones are UTC), else None."""
    if not 8 <= len(text) <= 64 or not text[:4].isdigit():
        return None
    return _parse_date(text)


@lru_cache(maxsize=65536)
def _parse_date(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


_NOW_MATH = re.compile(r"now((?:[+-]\d+[yMwdhHms])*)(?:/([yMwdhHms]))?")
_NOW_STEP = re.compile(r"([+-])(\d+)([yMwdhHms])")
_FIXED_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
                "H": timedelta(hours=1), "m": timedelta(minutes=1), "s": timedelta(seconds=1)}


def _date_math(text: str, *, round_up: bool) -> Callable[[], datetime] | None:
    """Elasticsearch date math relative to now (``now-5m``, ``now-1d/d``), evaluated per call.

    Rounding goes down for ``>=`` and ``<``, and to the end of the unit for ``>`` and ``<=``, as in Elasticsearch.
    """
    match = _NOW_MATH.fullmatch(text.strip())
    if match is None:
        return None
    steps = [(sign, int(amount), unit) for sign, amount, unit in _NOW_STEP.findall(match.group(1))]
    rounding = match.group(2)

    def bound() -> datetime:
        when = datetime.now(timezone.utc)
        for sign, amount, unit in steps:
            when = _shift(when, amount if sign == "+" else -amount, unit)
        if rounding:
            start = _round_down(when, rounding)
            when = _shift(start, 1, rounding) - timedelta(microseconds=1) if round_up else start
        return when

    return bound


def _shift(when: datetime, amount: int, unit: str) -> datetime:
    if unit in _FIXED_UNITS:
        return when + amount * _FIXED_UNITS[unit]
    months = amount * (12 if unit == "y" else 1)
    month_index = when.year * 12 + when.month - 1 + months
    year, month = divmod(month_index, 12)
    # Clamp the day to the target month's length (Jan 31 + 1M = Feb 28/29).
    for day in range(when.day, 27, -1):
        try:
            return when.replace(year=year, month=month + 1, day=day)
        except ValueError:
            continue
    return when.replace(year=year, month=month + 1, day=min(when.day, 28))


def _round_down(when: datetime, unit: str) -> datetime:
    if unit == "s":
        return when.replace(microsecond=0)
    if unit == "m":
        return when.replace(second=0, microsecond=0)
    if unit in ("h", "H"):
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)
