"""EQL (Elastic's Event Query Language), the subset a rule can hold: one
``any where <condition>`` over a single event, translated to ``gatewatch.kql.ast``
nodes with EQL's own semantics, so the KQL compiler evaluates it.

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
backticked (`` `kubernetes.audit.annotations.authorization_k8s_io/decision` ``).

Everything else is refused with ``EqlSyntaxError(unsupported=True)`` naming the
construct and its position: other event categories (``process where``),
sequences and samples, pipes, functions, ``regex``, the ``?`` wildcard (the AST
has only ``*``), comparing two fields, arithmetic.
"""
from __future__ import annotations

import re
from functools import cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from gatewatch.errors import EqlSyntaxError
from gatewatch.kql.ast import And, Exists, Node, Not, Or, Range, Term, Wildcard

# The grammar of the subset (plus the constructs we recognise only to refuse them
# by name). Keywords are lowercase, as in EQL; `in~`, `like~`, `regex~` are the
# case-insensitive operators. Lives here rather than in a .lark file so that it
# ships with the module whatever the package data says.
GRAMMAR = r"""
start: category _WHERE expr pipes?

category: NAME | ANY
pipes: PIPE

?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr                    -> negation
         | predicate

?predicate: _LPAR expr _RPAR
          | field COMPARE value            -> compare
          | field COLON values             -> colon
          | field LIKE values              -> like
          | field REGEX values             -> regex
          | field IN value_list            -> in_
          | field _NOT IN value_list       -> not_in
          | field COMPARE field            -> field_compare
          | call                           -> function_call
          | call COMPARE value             -> function_call
          | field                          -> bare_field

values: value | value_list
value_list: _LPAR value (_COMMA value)* _COMMA? _RPAR
value: STRING | NUMBER | NULL | TRUE | FALSE

call: NAME _LPAR (arg (_COMMA arg)*)? _RPAR
    | NAME_CI _LPAR (arg (_COMMA arg)*)? _RPAR
?arg: value | field | call

field: NAME | BACKTICKED

_WHERE.3: /where(?![\w@.~])/
ANY.3: /any(?![\w@.~])/
_AND.3: /and(?![\w@.~])/
_OR.3: /or(?![\w@.~])/
_NOT.3: /not(?![\w@.~])/
IN.3: /in(~|(?![\w@.]))/
LIKE.3: /like(~|(?![\w@.]))/
REGEX.3: /regex(~|(?![\w@.]))/
NULL.3: /null(?![\w@.~])/
TRUE.3: /true(?![\w@.~])/
FALSE.3: /false(?![\w@.~])/

NAME_CI.2: /[A-Za-z_@][\w@.]*~(?=\s*\()/
NAME: /[A-Za-z_@][\w@.]*/
BACKTICKED: /`(?:[^`]|``)+`/
STRING: /\"\"\"[\s\S]*?\"\"\"/ | /\?"(?:[^"\\\n]|\\.)*"/ | /"(?:[^"\\\n]|\\.)*"/
NUMBER: /-?\d+(\.\d+)?([eE][+-]?\d+)?/
COMPARE: "==" | "!=" | "<=" | ">=" | "<" | ">"
COLON: ":"
PIPE: /\|[\s\S]*/
_LPAR: "("
_RPAR: ")"
_COMMA: ","

%ignore /[ \t\r\n]+/
%ignore /\/\/[^\n]*/
%ignore /\/\*[\s\S]*?\*\//
"""

_SINGLE_EVENT_ONLY = re.compile(r"^\s*(sequence|sample|join)\b")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_ESCAPE = re.compile(r"\\(u\{([0-9a-fA-F]{1,8})\}|.)", re.DOTALL)


class _Refused(Exception):
    """Raised inside the transformer; becomes EqlSyntaxError with the query text."""

    def __init__(self, reason: str, offset: int, *, unsupported: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.unsupported = unsupported


_NULL = object()  # EQL null, distinct from the string "null"


class _FieldName(str):
    """A field name that remembers where it was written (for error positions)."""

    offset: int

    def __new__(cls, name: str, offset: int) -> _FieldName:
        instance = super().__new__(cls, name)
        instance.offset = offset
        return instance


def _unescape(text: str, offset: int) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            return chr(int(match.group(2), 16))
        char = match.group(1)
        if char not in _ESCAPES:
            raise _Refused(f"invalid escape sequence '\\{char}'", offset + match.start(), unsupported=False)
        return _ESCAPES[char]

    return _ESCAPE.sub(replace, text)


def _string_value(token: Token) -> str:
    text = str(token)
    if text.startswith('"""'):
        return text[3:-3]
    if text.startswith("?"):
        return text[2:-1]  # raw string: no escapes
    return _unescape(text[1:-1], token.start_pos + 1)


class _Value:
    """A literal with where it was written (for error positions)."""

    __slots__ = ("value", "offset", "is_string")

    def __init__(self, value: object, offset: int, *, is_string: bool) -> None:
        self.value = value
        self.offset = offset
        self.is_string = is_string

    @property
    def text(self) -> str:
        if self.value is True:
            return "true"
        if self.value is False:
            return "false"
        return str(self.value)


def _flatten(kind: type[And] | type[Or], items: list[Node]) -> Node:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, kind) else (item,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _pattern_node(field: str, value: _Value, *, case_insensitive: bool, operator: str) -> Node:
    """``:``/``like``: ``*`` is a wildcard; ``?`` cannot be expressed."""
    if value.value is _NULL:
        raise _Refused(f"'{operator}' with null is not supported (use == null)", value.offset)
    text = value.text
    if value.is_string and "?" in text:
        raise _Refused(
            f"the '?' wildcard in {text!r} is not supported (only '*')", value.offset
        )
    if value.is_string and "*" in text:
        return Wildcard.from_pattern(field, text, case_insensitive=case_insensitive)
    return Term(field, text, case_insensitive)


@v_args(inline=True)
class _ToAst(Transformer):
    def start(self, _category: Node, expr: Node, pipes: Token | None = None) -> Node:
        return expr

    def category(self, token: Token) -> None:
        if token.type != "ANY":
            raise _Refused(
                f"event category {str(token)!r}: only 'any where' queries are supported", token.start_pos
            )

    def pipes(self, token: Token) -> None:
        raise _Refused("pipes ('| head', '| filter', ...) are not supported", token.start_pos)

    def negation(self, item: Node) -> Node:
        return Not(item)

    def or_expr(self, *items: Node) -> Node:
        return _flatten(Or, list(items))

    def and_expr(self, *items: Node) -> Node:
        return _flatten(And, list(items))

    def field(self, token: Token) -> str:
        text = str(token)
        name = text[1:-1].replace("``", "`") if text.startswith("`") else text
        return _FieldName(name, token.start_pos or 0)

    def value(self, token: Token) -> _Value:
        kind = token.type
        if kind == "STRING":
            return _Value(_string_value(token), token.start_pos, is_string=True)
        if kind == "NUMBER":
            number = float(token) if any(c in token for c in ".eE") else int(token)
            return _Value(number, token.start_pos, is_string=False)
        if kind == "NULL":
            return _Value(_NULL, token.start_pos, is_string=False)
        return _Value(kind == "TRUE", token.start_pos, is_string=False)

    def value_list(self, *values: _Value) -> list[_Value]:
        return list(values)

    def values(self, item: _Value | list[_Value]) -> list[_Value]:
        return item if isinstance(item, list) else [item]

    def compare(self, field: str, operator: Token, value: _Value) -> Node:
        field = str(field)  # a plain str in the tree
        op = str(operator)
        if value.value is _NULL:
            if op == "==":
                return Not(Exists(field))
            if op == "!=":
                return Exists(field)
            raise _Refused(f"'{op} null' is not supported", operator.start_pos)
        if op == "==":
            return Term(field, value.text)
        if op == "!=":
            return Not(Term(field, value.text))
        return Range(field, op, value.text)  # type: ignore[arg-type]

    def colon(self, field: str, _colon: Token, values: list[_Value]) -> Node:
        field = str(field)  # a plain str in the tree
        return _flatten(Or, [_pattern_node(field, v, case_insensitive=True, operator=":") for v in values])

    def like(self, field: str, operator: Token, values: list[_Value]) -> Node:
        field = str(field)  # a plain str in the tree
        insensitive = str(operator).endswith("~")
        return _flatten(
            Or, [_pattern_node(field, v, case_insensitive=insensitive, operator=str(operator)) for v in values]
        )

    def regex(self, _field: str, operator: Token, _values: list[_Value]) -> Node:
        raise _Refused(f"'{operator}' is not supported", operator.start_pos)

    def in_(self, field: str, operator: Token, values: list[_Value]) -> Node:
        field = str(field)  # a plain str in the tree
        insensitive = str(operator).endswith("~")
        terms: list[Node] = []
        for value in values:
            if value.value is _NULL:
                terms.append(Not(Exists(field)))
            else:
                terms.append(Term(field, value.text, insensitive))
        return _flatten(Or, terms)

    def not_in(self, field: str, operator: Token, values: list[_Value]) -> Node:
        return Not(self.in_(field, operator, values))

    def field_compare(self, _left: str, operator: Token, _right: str) -> Node:
        raise _Refused("comparing a field with another field is not supported", operator.start_pos)

    def call(self, name: Token, *_args: object) -> Token:
        return name

    def function_call(self, name: Token, *_rest: object) -> Node:
        raise _Refused(f"function {str(name).rstrip('~')}() is not supported", name.start_pos)

    def bare_field(self, field: str) -> Node:
        raise _Refused(
            f"a bare field ({str(field)!r}) is not a condition; compare it with a value",
            getattr(field, "offset", 0),
        )


@cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)


def eql_to_ast(query: str) -> Node:
    """Translate an ``any where`` EQL query to a KQL syntax tree.

    Raises ``EqlSyntaxError`` (with position and caret) for a query that does
    not parse, and with ``unsupported=True`` for EQL beyond the subset.
    """
    if not isinstance(query, str) or not query.strip():
        raise EqlSyntaxError("empty EQL query", query=str(query or ""), offset=0)
    match = _SINGLE_EVENT_ONLY.match(query)
    if match:
        raise EqlSyntaxError(
            f"{match.group(1)} queries are not supported (only a single-event 'any where' condition)",
            query=query, offset=match.start(1), unsupported=True,
        )
    try:
        tree = _parser().parse(query)
        return _ToAst().transform(tree)
    except VisitError as error:
        cause = error.orig_exc
        if isinstance(cause, _Refused):
            raise EqlSyntaxError(
                cause.reason, query=query, offset=cause.offset, unsupported=cause.unsupported
            ) from None
        raise
    except _Refused as error:  # raised while lexing string escapes
        raise EqlSyntaxError(error.reason, query=query, offset=error.offset, unsupported=error.unsupported) from None
    except UnexpectedInput as error:
        reason, offset = _explain(error, query)
        unsupported = reason.endswith("is not supported")
        raise EqlSyntaxError(reason, query=query, offset=offset, unsupported=unsupported) from None


_CATEGORY = re.compile(r"^\s*(?:/\*[\s\S]*?\*/\s*|//[^\n]*\n\s*)*([A-Za-z_][\w]*)\s+where\b")


def event_category(query: str) -> str | None:
    """The event category of a single-event query (``any``, ``process``, ``file`` ...);
    None for sequences, samples and anything that is not ``<category> where``."""
    match = _CATEGORY.match(query)
    return match.group(1) if match else None


def _explain(error: UnexpectedInput, query: str) -> tuple[str, int]:
    if isinstance(error, UnexpectedEOF):
        return "unexpected end of query", len(query)
    if isinstance(error, UnexpectedCharacters):
        char = query[error.pos_in_stream] if error.pos_in_stream < len(query) else ""
        if char == "'":
            return "single-quoted strings are not EQL: use double quotes", error.pos_in_stream
        if char == '"':
            return "unterminated string", error.pos_in_stream
        if char in "+-*/%":
            return f"arithmetic ({char!r}) is not supported", error.pos_in_stream
        return f"unexpected character {char!r}", error.pos_in_stream
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            return "unexpected end of query", len(query)
        offset = token.start_pos if token.start_pos is not None else 0
        if token.type in ("NAME", "ANY") and offset == 0 or (token.type == "_WHERE" and offset == 0):
            return "expected '<category> where <condition>'", offset
        return f"unexpected {str(token)!r}", offset
    return str(error), getattr(error, "pos_in_stream", 0) or 0
