"""EQL (Elastic's Event Query Language), the subset a rule can hold: one
``any where <condition>`` over a single event, translated to ``gatewatch.kql.ast``
nodes with Elasticsearch's EQL semantics, so the KQL compiler evaluates it; and
a ``sequence [by keys] [with maxspan=...] [any where ...] [by keys] ... [until
[...]]`` of such conditions (``eql_sequence``: each step's condition translated
the same way, run over many events by ``gatewatch.sequences``).

Parsing is Elastic's: the ``eql`` package (the EQL reference implementation,
the version Elastic's detection-rules pins) parses the query with its
Elasticsearch syntax, and refuses what Elasticsearch refuses (single-quoted
and ``?"..."`` strings, ``=`` for ``==``, a field compared with a field). It
parses every EQL rule of Elastic's Kubernetes rule set (13 of 13, sequences
and endpoint rules included). Its own syntax tree cannot be used for the
semantics: it keeps Endgame EQL's case-insensitive reading and folds ``:``,
``like`` and ``like~`` into one ``wildcard()`` and ``in``/``in~`` into one
set, so the translation below walks the parse tree of eql's grammar, where
each operator is still as written.

Semantics kept (Elasticsearch EQL reference):

=====================  ==========================================================
EQL                    meaning, as AST
=====================  ==========================================================
``f == "v"``           exact, case-sensitive: ``Term(f, v)``
``f != "v"``           ``Not(Term(f, v))`` (true when f is absent, as ES's must_not)
``f == null``          ``Not(Exists(f))``;  ``f != null``: ``Exists(f)``
``f : "v*"``           case-insensitive, ``*`` wildcard: ``Wildcard/Term(ci=True)``
``f like "v*"``        case-sensitive wildcard;  ``like~``: case-insensitive
``f in ("a", "b")``    case-sensitive exact, any of;  ``in~``: case-insensitive
``f not in (...)``     ``Not(...)``
``f < 5`` (<= > >=)    ``Range``
``and`` ``or`` ``not``  ``And`` ``Or`` ``Not``; parentheses group
=====================  ==========================================================

A value list after ``:``/``like`` means any of the values. Field names may be
backticked (`` `kubernetes.audit.annotations.authorization_k8s_io/decision` ``)
or optional (``?field``: absent is null, as for any field here).

Everything else is refused with ``EqlSyntaxError(unsupported=True)`` naming the
construct and its position: other event categories (``process where``),
samples, ``fork``, pipes, functions, ``regex``, the ``?`` wildcard (the AST
has only ``*``), arithmetic, array indexes in field names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from gatewatch.errors import EqlSyntaxError
from gatewatch.kql.ast import And, Exists, Node, Not, Or, Range, Term, Wildcard

_CATEGORY = re.compile(r"^\s*(?:/\*[\s\S]*?\*/\s*|//[^\n]*\n\s*)*([A-Za-z_][\w]*)\s+where\b")
_SEQUENCE = re.compile(r"^\s*(?:/\*[\s\S]*?\*/\s*|//[^\n]*\n\s*)*sequence\b")
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class _Refused(Exception):
    """Raised while walking the tree; becomes EqlSyntaxError with the query text."""

    def __init__(self, reason: str, offset: int, *, unsupported: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.unsupported = unsupported


class _Literal:
    """A literal as EQL read it, with where it was written."""

    __slots__ = ("value", "offset")

    def __init__(self, value: object, offset: int) -> None:
        self.value = value  # str, int, float, bool, or None (null)
        self.offset = offset

    @property
    def is_string(self) -> bool:
        return isinstance(self.value, str)

    @property
    def text(self) -> str:
        if self.value is True:
            return "true"
        if self.value is False:
            return "false"
        return str(self.value)


@cache
def _eql() -> Any:
    """The eql package, imported on first use (it takes a few hundred ms to import)."""
    import eql
    import eql.parser

    return eql


def event_category(query: str) -> str | None:
    """The event category of a single-event query (``any``, ``process``, ``file`` ...);
    None for sequences, samples and anything that is not ``<category> where``."""
    match = _CATEGORY.match(query)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class EqlSequence:
    """A ``sequence`` query, its conditions as KQL syntax trees.

    ``keys[i]`` are the join fields of step ``i`` (the sequence's own ``by``
    fields first, then the step's), ``until_keys`` those of the ``until``
    condition; an optional field (``?field``, which may be null) keeps its
    ``?``. ``maxspan`` None: no limit.
    """

    steps: tuple[Node, ...]
    keys: tuple[tuple[str, ...], ...]
    maxspan: timedelta | None = None
    until: Node | None = None
    until_keys: tuple[str, ...] = ()


def sequence_categories(query: str) -> tuple[str, ...]:
    """The event categories of a sequence's steps and ``until``, in order (() when it does not parse)."""
    try:
        parsed = _check_with_elastic(query)
    except EqlSyntaxError:
        return ()
    first = parsed.first
    subqueries = [*getattr(first, "queries", ()), *([first.close] if getattr(first, "close", None) else [])]
    return tuple(str(subquery.query.event_type) for subquery in subqueries)


def is_sequence(query: str) -> bool:
    """True when the query is an EQL ``sequence`` (whatever else it holds)."""
    return _SEQUENCE.match(query) is not None


def eql_sequence(query: str) -> EqlSequence:
    """Translate a ``sequence`` query: each step's condition as ``eql_to_ast`` would.

    Raises ``EqlSyntaxError`` as ``eql_to_ast`` does; ``unsupported=True`` for a
    query that is not a sequence, a step of another event category than
    ``any``, ``fork``, a join key that is not a field, pipes.
    """
    tree = _parse_tree(query)
    parsed = _check_with_elastic(query)
    try:
        return _Translator().sequence(tree, parsed)
    except _Refused as error:
        raise EqlSyntaxError(error.reason, query=query, offset=error.offset, unsupported=error.unsupported) from None


def _parse_tree(query: str) -> Tree:
    if not isinstance(query, str) or not query.strip():
        raise EqlSyntaxError("empty EQL query", query=str(query or ""), offset=0)
    try:
        return _eql().parser.lark_parser.parse(query + "\n", start="piped_query")
    except UnexpectedInput as error:
        reason, offset = _explain(error, query)
        raise EqlSyntaxError(reason, query=query, offset=offset) from None


def eql_to_ast(query: str) -> Node:
    """Translate an ``any where`` EQL query to a KQL syntax tree.

    Raises ``EqlSyntaxError`` (with position and caret) for a query that does
    not parse, and with ``unsupported=True`` for EQL beyond the subset.
    """
    tree = _parse_tree(query)
    _check_with_elastic(query)
    try:
        return _Translator().piped_query(tree)
    except _Refused as error:
        raise EqlSyntaxError(error.reason, query=query, offset=error.offset, unsupported=error.unsupported) from None


def _check_with_elastic(query: str) -> Any:
    """What Elasticsearch's EQL refuses, as Elastic's eql package says it (types,
    string forms, field-to-field comparisons, ``with runs``, missing events);
    returns eql's syntax tree."""
    eql = _eql()
    parser = eql.parser
    try:
        with parser.elasticsearch_syntax, parser.ignore_missing_functions, parser.skip_optimizations:
            return eql.parse_query(query)
    except eql.EqlParseError as error:
        lines = (query + "\n").split("\n")
        offset = sum(len(line) + 1 for line in lines[: error.line]) + error.column
        raise EqlSyntaxError(error.error_msg, query=query, offset=offset) from None


def _offset(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.start_pos or 0
    return getattr(node.meta, "start_pos", 0) if not node.meta.empty else 0


class _Translator:
    """Walks the parse tree of eql's grammar (``eql/etc/eql.g``)."""

    def piped_query(self, tree: Tree) -> Node:
        base = tree.children[0]
        if len(tree.children) > 1 and tree.children[1] is not None:
            raise _Refused("pipes ('| head', '| filter', ...) are not supported", _offset(tree.children[1]))
        query = base.children[0]
        if query.data != "event_query":
            raise _Refused(
                f"{query.data} queries are not supported (only a single-event 'any where' condition)", _offset(query)
            )
        category, condition = query.children
        if category is None or str(category.children[0]) != "any":
            where = category if category is not None else query
            name = str(category.children[0]) if category is not None else ""
            raise _Refused(f"event category {name!r}: only 'any where' queries are supported", _offset(where))
        return self.condition(condition)

    def sequence(self, tree: Tree, parsed: Any) -> EqlSequence:
        """``parsed`` is eql's own tree of the same query: it gives maxspan in milliseconds."""
        base = tree.children[0]
        if len(tree.children) > 1 and tree.children[1] is not None:
            raise _Refused("pipes ('| head', '| filter', ...) are not supported", _offset(tree.children[1]))
        query = base.children[0]
        if query.data != "sequence":
            raise _Refused(f"not a sequence ({query.data.replace('_', ' ')})", _offset(query))
        shared: tuple[str, ...] = ()
        steps: list[Node] = []
        keys: list[tuple[str, ...]] = []
        until: Node | None = None
        until_keys: tuple[str, ...] = ()
        for child in query.children:
            if not isinstance(child, Tree):
                continue
            if child.data == "join_values":
                shared = self.join_fields(child)
            elif child.data == "subquery_by":
                condition, own = self.subquery_by(child)
                steps.append(condition)
                keys.append(shared + own)
            elif child.data == "until_subquery_by":
                until, own = self.subquery_by(child.children[0])
                until_keys = shared + own
        span = parsed.first.max_span
        maxspan = None if span is None else timedelta(milliseconds=span.as_milliseconds())
        return EqlSequence(steps=tuple(steps), keys=tuple(keys), maxspan=maxspan, until=until, until_keys=until_keys)

    def subquery_by(self, node: Tree) -> tuple[Node, tuple[str, ...]]:
        """``[any where condition] by fields``: the condition and the step's own join fields."""
        subquery, *rest = node.children
        own: tuple[str, ...] = ()
        for child in rest:
            if isinstance(child, Tree) and child.data == "join_values":
                own = self.join_fields(child)
            elif isinstance(child, Tree) and child.data == "fork_param":
                raise _Refused("'fork' is not supported", _offset(child))
            elif child is not None:
                raise _Refused(f"{getattr(child, 'data', child)} is not supported", _offset(child))
        event_query = next(c for c in subquery.children if isinstance(c, Tree) and c.data == "event_query")
        category, condition = event_query.children
        if category is None or str(category.children[0]) != "any":
            name = str(category.children[0]) if category is not None else ""
            raise _Refused(f"event category {name!r}: only 'any where' steps are supported",
                           _offset(category if category is not None else event_query))
        return self.condition(condition), own

    def join_fields(self, node: Tree) -> tuple[str, ...]:
        (expressions,) = node.children
        items = expressions.children if expressions.data == "expressions" else [expressions]
        fields = []
        for item in items:
            if not self._is_field(item):
                raise _Refused("a join key must be a field", _offset(item))
            text = "".join(str(token) for token in item.scan_values(lambda value: isinstance(value, Token)))
            fields.append(("?" if text.startswith("?") else "") + self.field(item))
        return tuple(fields)

    # -- conditions

    def condition(self, node: Tree | Token) -> Node:
        if isinstance(node, Token) or node.data in ("field", "base_field", "literal", "value"):
            if isinstance(node, Tree) and node.data in ("field", "base_field"):
                name = self.field(node)
                raise _Refused(f"a bare field ({name!r}) is not a condition; compare it with a value", _offset(node))
            raise _Refused("a constant is not a condition", _offset(node))
        handler = getattr(self, f"_{node.data}", None)
        if handler is None:
            raise _Refused(f"{node.data.replace('_', ' ')} is not supported", _offset(node))
        return handler(node)

    def _or_expr(self, node: Tree) -> Node:
        return _flatten(Or, [self.condition(child) for child in node.children])

    def _and_expr(self, node: Tree) -> Node:
        return _flatten(And, [self.condition(child) for child in node.children])

    def _not_expr(self, node: Tree) -> Node:
        nots = [child for child in node.children if isinstance(child, Token) and child.type == "NOT_OP"]
        inner = self.condition(node.children[-1])
        return Not(inner) if len(nots) % 2 else inner

    def _comparison(self, node: Tree) -> Node:
        left, operator, right = node.children
        op = str(operator)
        if self._is_field(right) and not self._is_field(left):
            left, right, op = right, left, _FLIPPED[op]
        field = self.operand_field(left)
        value = self.literal(right)
        if value.value is None:
            if op in ("==", "!="):
                return Not(Exists(field)) if op == "==" else Exists(field)
            raise _Refused(f"'{op} null' is not supported", _offset(operator))
        if op == "==":
            return Term(field, value.text)
        if op == "!=":
            return Not(Term(field, value.text))
        return Range(field, op, value.text)  # type: ignore[arg-type]

    def _string_predicate(self, node: Tree) -> Node:
        subject, operator, *values = node.children
        op = str(operator)
        field = self.operand_field(subject)
        if op.startswith("regex"):
            raise _Refused(f"'{op}' is not supported", _offset(operator))
        insensitive = op == ":" or op.endswith("~")
        return _flatten(Or, [self._pattern(field, self.literal(v), insensitive=insensitive, operator=op) for v in values])

    def _in_set(self, node: Tree) -> Node:
        subject, operator, expressions = node.children
        field = self.operand_field(subject)
        insensitive = str(operator).endswith("~")
        terms: list[Node] = []
        for item in expressions.children:
            value = self.literal(item)
            terms.append(Not(Exists(field)) if value.value is None else Term(field, value.text, insensitive))
        return _flatten(Or, terms)

    def _not_in_set(self, node: Tree) -> Node:
        return Not(self._in_set(node))

    def _function_call(self, node: Tree) -> Node:
        name = str(node.children[0]).rstrip("~")
        raise _Refused(f"function {name}() is not supported", _offset(node))

    def _method_chain(self, node: Tree) -> Node:
        raise _Refused("method calls (field:function()) are not supported", _offset(node))

    def _sum_expr(self, node: Tree) -> Node:
        raise _Refused("arithmetic is not supported", _offset(node))

    _mul_expr = _sum_expr

    # -- operands

    @staticmethod
    def _is_field(node: Tree | Token) -> bool:
        return isinstance(node, Tree) and node.data in ("field", "base_field")

    def operand_field(self, node: Tree | Token) -> str:
        if not self._is_field(node):
            if isinstance(node, Tree) and node.data == "function_call":
                self._function_call(node)
            if isinstance(node, Tree) and node.data in ("sum_expr", "mul_expr"):
                self._sum_expr(node)
            raise _Refused("the left side must be a field", _offset(node))
        return self.field(node)  # type: ignore[arg-type]

    def field(self, node: Tree) -> str:
        text = "".join(str(token) for token in node.scan_values(lambda value: isinstance(value, Token)))
        eql = _eql()
        with eql.parser.elasticsearch_syntax:
            parsed = eql.parser.parse_field(text)
        path = [parsed.base, *parsed.path]
        if any(isinstance(part, int) for part in path):
            raise _Refused(f"array indexes in field names ({text!r}) are not supported", _offset(node))
        return ".".join(path)

    def literal(self, node: Tree | Token) -> _Literal:
        sign = ""
        if isinstance(node, Tree) and node.data == "value":  # -5: a signed literal
            sign_token, node = node.children
            sign = str(sign_token)
        if not (isinstance(node, Tree) and node.data == "literal"):
            if self._is_field(node):
                raise _Refused("comparing a field with another field is not supported", _offset(node))
            raise _Refused("only a literal value can be compared with a field", _offset(node))
        (inner,) = node.children
        offset = _offset(node)
        kind = inner.data
        if kind == "null":
            return _Literal(None, offset)
        if kind == "boolean":
            return _Literal(str(inner.children[0]) == "true", offset)
        token = str(inner.children[0])
        if kind == "number":
            number: int | float = float(token) if any(c in token for c in ".eE") else int(token)
            return _Literal(-number if sign == "-" else number, offset)
        # strings: eql has checked they are "..." or """...""" (Elasticsearch's forms)
        if token.startswith('"""'):
            return _Literal(token[3:-3], offset)
        return _Literal(_eql().ast.String.unescape(token[1:-1]), offset)

    @staticmethod
    def _pattern(field: str, value: _Literal, *, insensitive: bool, operator: str) -> Node:
        """``:``/``like``: ``*`` is a wildcard; ``?`` cannot be expressed."""
        if value.value is None:
            raise _Refused(f"'{operator}' with null is not supported (use == null)", value.offset)
        text = value.text
        if value.is_string and "?" in text:
            raise _Refused(f"the '?' wildcard in {text!r} is not supported (only '*')", value.offset)
        if value.is_string and "*" in text:
            return Wildcard.from_pattern(field, text, case_insensitive=insensitive)
        return Term(field, text, insensitive)


def _flatten(kind: type[And] | type[Or], items: list[Node]) -> Node:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, kind) else (item,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _explain(error: UnexpectedInput, query: str) -> tuple[str, int]:
    if isinstance(error, UnexpectedEOF):
        return "unexpected end of query", len(query)
    if isinstance(error, UnexpectedCharacters):
        position = min(error.pos_in_stream, len(query))
        char = query[position] if position < len(query) else ""
        if char == '"':
            return "unterminated string", position
        if char == "'":
            return "unterminated single-quoted string (EQL strings use double quotes)", position
        return f"unexpected character {char!r}", position
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END" or (token.start_pos is not None and token.start_pos >= len(query)):
            return "unexpected end of query", len(query)
        offset = token.start_pos if token.start_pos is not None else 0
        return f"unexpected {str(token)!r}", offset
    return str(error), getattr(error, "pos_in_stream", 0) or 0
