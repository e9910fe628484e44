"""KQL text <-> syntax tree: ``parse`` (with the grammar in ``kql.lark``) and ``to_kql``.

The LALR parser is built once, on first use, and the tree is built while
parsing (no intermediate parse tree). Syntax errors become
``KqlSyntaxError`` with a human reason and the offset of the offending token.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import NamedTuple

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from gatewatch.errors import KqlRenderError, KqlSyntaxError
from gatewatch.kql.ast import And, Exists, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard


# --- literals -----------------------------------------------------------------

# One piece of an unquoted literal: an escape, an unescaped `*`, or plain text.
# Keep the escapes in step with UNQUOTED in kql.lark.
_UNQUOTED_PIECE = re.compile(
    r"""\\(?:(?P<special>[\\():<>"*{}])"""
    r"""|(?P<keyword>[Aa][Nn][Dd]|[Oo][Rr]|[Nn][Oo][Tt](?![A-Za-z0-9_]))"""
    r"""|(?P<space>[trn])|u(?P<hex>[0-9a-fA-F]{4}))"""
    r"""|(?P<star>\*)|(?P<text>[^\\*]+)"""
)
_QUOTED_ESCAPE = re.compile(r"""\\(?:(?P<char>[\\"])|(?P<space>[trn])|u(?P<hex>[0-9a-fA-F]{4}))""")
_ESCAPED_SPACE = {"t": "\t", "r": "\r", "n": "\n"}


def _unquoted_parts(text: str) -> list[str]:
    """Unescape an unquoted literal, split at its unescaped ``*`` wildcards."""
    parts: list[str] = []
    current: list[str] = []
    for piece in _UNQUOTED_PIECE.finditer(text):
        kind = piece.lastgroup
        if kind == "star":
            parts.append("".join(current))
            current = []
        elif kind == "text":
            current.append(piece.group())
        elif kind == "space":
            current.append(_ESCAPED_SPACE[piece.group(kind)])
        elif kind == "hex":
            current.append(chr(int(piece.group(kind), 16)))
        else:  # special, keyword: the character(s) as written
            current.append(piece.group(kind))
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    """The value of a quoted phrase, quotes removed; unknown escapes stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group("char"):
            return match.group("char")
        if match.group("space"):
            return _ESCAPED_SPACE[match.group("space")]
        return chr(int(match.group("hex"), 16))

    return _QUOTED_ESCAPE.sub(replace, text[1:-1])


def _literal_text(token: Token) -> str:
    """A literal's text with escapes resolved and ``*`` kept as a character."""
    if token.type == "QUOTED":
        return _unquote(token)
    return "*".join(_unquoted_parts(token))


# --- parse tree -> AST ----------------------------------------------------------


class _Field(NamedTuple):
    name: str
    offset: int


# What a value list becomes before its field is known: field -> node.
_ValueBuilder = Callable[[str | None], Node]


def _value_node(field: str | None, token: Token) -> Node:
    if token.type == "QUOTED":
        return Term(field, _unquote(token))
    parts = _unquoted_parts(token)
    if len(parts) == 1:
        return Term(field, parts[0])
    if parts == ["", ""]:
        return MatchAll() if field is None else Exists(field)
    return Wildcard(field, tuple(parts))


def _flatten(kind: type[Or] | type[And], items: list[Node]) -> tuple[Node, ...]:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, kind) else (item,))
    return tuple(flat)


class _ToAst(Transformer):
    """Callbacks run by the LALR parser as it reduces each rule."""

    def start(self, children: list[Node]) -> Node:
        return children[0]

    def or_query(self, children: list[Node]) -> Node:
        return Or(_flatten(Or, children))

    def and_query(self, children: list[Node]) -> Node:
        return And(_flatten(And, children))

    def negation(self, children: list[Node]) -> Node:
        return Not(children[0])

    def literal(self, children: list[Token]) -> Token:
        return children[0]

    def field(self, children: list[Token]) -> _Field:
        token = children[0]
        name = _literal_text(token)
        if not name.strip():
            raise _SemanticError("empty field name", token.start_pos)
        return _Field(name, token.start_pos)

    def free_text(self, children: list[Token]) -> Node:
        return _value_node(None, children[0])

    def field_match(self, children: list) -> Node:
        field, _colon, build = children
        return build(field.name)

    def range(self, children: list) -> Node:
        field, operator, token = children
        return Range(field.name, str(operator), _literal_text(token))  # type: ignore[arg-type]

    def nested(self, children: list) -> Node:
        field, _colon, query = children
        if "*" in field.name:
            raise _SemanticError("a nested query needs a field name without wildcards", field.offset)
        return Nested(field.name, query)

    # Value lists: builders that receive the field once it is known.

    def value(self, children: list[Token]) -> _ValueBuilder:
        token = children[0]
        return lambda field: _value_node(field, token)

    def value_or(self, children: list[_ValueBuilder]) -> _ValueBuilder:
        return lambda field: Or(_flatten(Or, [build(field) for build in children]))

    def value_and(self, children: list[_ValueBuilder]) -> _ValueBuilder:
        return lambda field: And(_flatten(And, [build(field) for build in children]))

    def value_negation(self, children: list[_ValueBuilder]) -> _ValueBuilder:
        build = children[0]
        return lambda field: Not(build(field))


class _SemanticError(Exception):
    """Raised inside parser callbacks; turned into KqlSyntaxError with the query."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


@cache
def _parser() -> Lark:
    grammar = resources.files("gatewatch.kql").joinpath("kql.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", transformer=_ToAst())


def parse(query: str) -> Node:
    """Parse KQL text into a syntax tree; raise ``KqlSyntaxError`` if it is not valid KQL."""
    if not isinstance(query, str):
        raise KqlSyntaxError(f"a KQL query must be text, not {type(query).__name__}", query=str(query), offset=0)
    if not query.strip(" \t\r\n"):  # KQL's whitespace, not Unicode's
        raise KqlSyntaxError("empty query (use * to match every document)", query=query, offset=0)
    try:
        tree = _parser().parse(query)
    except _SemanticError as error:
        raise KqlSyntaxError(error.reason, query=query, offset=error.offset) from None
    except UnexpectedInput:
        reason, offset = _explain_error(query)
        raise KqlSyntaxError(reason, query=query, offset=offset) from None
    if _depth(tree) > MAX_DEPTH:
        # Compiling and rendering recurse over the tree; refuse before they overflow.
        raise KqlSyntaxError(f"query nested more than {MAX_DEPTH} levels deep", query=query, offset=0)
    return tree


MAX_DEPTH = 100


def _depth(tree: Node) -> int:
    """How deeply and/or/not/nested nodes are nested (iteratively: the tree may be deep)."""
    deepest = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(node, (Or, And)):
            pending.extend((item, depth + 1) for item in node.items)
        elif isinstance(node, Not):
            pending.append((node.item, depth + 1))
        elif isinstance(node, Nested):
            pending.append((node.query, depth + 1))
    return deepest


# --- error messages -------------------------------------------------------------

_TOKEN_NAMES = {
    "COLON": "':'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LBRACE": "'{'",
    "_RBRACE": "'}'",
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
}


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of query"
    if token.type in ("QUOTED", "UNQUOTED"):
        return f"value {str(token)!r}"
    return _TOKEN_NAMES.get(token.type, repr(str(token)))


def _explain_error(query: str) -> tuple[str, int]:
    """Re-run the parse token by token to say what was expected after which token."""
    interactive = _parser().parse_interactive(query)
    previous: Token | None = None
    current: Token | None = None
    opened: list[Token] = []  # unclosed ( and {
    try:
        for token in interactive.iter_parse():
            if current is not None:
                _track_brackets(current, opened)
            previous, current = current, token
        if current is not None:
            _track_brackets(current, opened)
        previous, current = current, Token("$END", "", start_pos=len(query))
        interactive.feed_eof()
    except _SemanticError as error:
        return error.reason, error.offset
    except UnexpectedCharacters as error:
        # The lexer found nothing acceptable after `current`.
        return _unexpected_character(query, error.pos_in_stream, current), error.pos_in_stream
    except (UnexpectedToken, UnexpectedEOF) as error:
        got = getattr(error, "token", None) or current
        if got is None or got.type == "$END":
            got = Token("$END", "", start_pos=len(query))
        elif current is not None and got.start_pos != current.start_pos:
            # Raised by the lexer before `got` was handed out: `current` came just before it.
            previous = current
            _track_brackets(current, opened)
        return _unexpected_token(got, previous, opened), _offset(got, query)
    return "invalid query", 0  # pragma: no cover - the full parse failed, so this one does too


def _track_brackets(token: Token, opened: list[Token]) -> None:
    if token.type in ("_LPAR", "_LBRACE"):
        opened.append(token)
    elif token.type in ("_RPAR", "_RBRACE") and opened:
        opened.pop()


def _offset(token: Token | None, query: str) -> int:
    if token is None or token.start_pos is None:
        return len(query)
    return token.start_pos


def _after(previous: Token | None) -> str | None:
    """What must follow ``previous``, when that alone explains the error."""
    if previous is None:
        return "expected a field or value"
    kind = previous.type
    if kind == "COLON":
        return "expected a value after ':'"
    if kind == "RANGE_OP":
        return f"expected a value after '{previous}'"
    if kind in ("_OR", "_AND", "_NOT"):
        return f"expected a condition after '{str(previous).lower()}'"
    if kind == "_LPAR":
        return "expected a condition after '('"
    if kind == "_LBRACE":
        return "expected a query after '{'"
    return None


def _unexpected_token(got: Token, previous: Token | None, opened: list[Token]) -> str:
    expected_after = _after(previous)
    if expected_after is not None:
        return f"{expected_after}, found {_describe(got)}"
    if got.type in ("$END", "_RPAR", "_RBRACE"):
        if opened:
            bracket = opened[-1]
            closing = ")" if bracket.type == "_LPAR" else "}"
            where = f"line {bracket.line}, column {bracket.column}" if bracket.line > 1 else f"column {bracket.column}"
            return f"missing '{closing}' to close the '{bracket}' at {where}, found {_describe(got)}"
        if got.type == "$END":
            return "unexpected end of query"
        opening = "(" if got.type == "_RPAR" else "{"
        return f"unexpected '{got}' with no matching '{opening}'"
    if got.type == "COLON":
        return "unexpected ':' (quote the value, or escape it as '\\:')"
    if got.type in ("QUOTED", "UNQUOTED", "_LPAR", "_NOT"):
        return f"expected 'and', 'or' or the end of the query before {_describe(got)}"
    return f"unexpected {_describe(got)}"


def _unexpected_character(query: str, offset: int, previous: Token | None) -> str:
    char = query[offset] if offset < len(query) else ""
    if char == '"':
        return "unterminated quoted string"
    if char == "\\":
        escape = query[offset : offset + 2]
        return f"invalid escape sequence {escape!r} (escape only \\ ( ) : < > \" * {{ }} and/or/not, \\t \\r \\n, \\uXXXX)"
    expected_after = _after(previous)
    if expected_after is not None:
        return f"{expected_after}, found {char!r}"
    return f"unexpected character {char!r}"


# --- AST -> text ----------------------------------------------------------------

_SPECIAL = re.compile(r"""[\\():<>"*{}]""")
_KEYWORD = re.compile(r"(?<![A-Za-z0-9_])(and|or|not)(?![A-Za-z0-9_])", re.IGNORECASE)
_PLAIN_FIELD = re.compile(r"[A-Za-z0-9_@./*-]+")


def quote(value: str) -> str:
    """``value`` as a quoted KQL phrase (no wildcards)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    return f'"{escaped}"'


def escape_unquoted(value: str) -> str:
    """``value`` as an unquoted KQL literal matching exactly that text (``*`` escaped)."""
    return _keep_outer_spaces(_escape_inner(value))


def _escape_inner(value: str) -> str:
    escaped = _SPECIAL.sub(lambda m: "\\" + m.group(), value)
    escaped = _KEYWORD.sub(lambda m: "\\" + m.group(), escaped)
    return escaped.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


def _keep_outer_spaces(escaped: str) -> str:
    # Unquoted literals are trimmed: keep outer spaces as \u0020 (inner spaces are
    # kept as written, which Elastic's own grammar also reads; it has no \u escape).
    stripped = escaped.lstrip(" ")
    escaped = "\\u0020" * (len(escaped) - len(stripped)) + stripped
    stripped = escaped.rstrip(" ")
    return stripped + "\\u0020" * (len(escaped) - len(stripped))


def _field_text(field: str) -> str:
    if _PLAIN_FIELD.fullmatch(field) and not _KEYWORD.fullmatch(field):
        return field
    return quote(field)


def _value_text(node: Node) -> str:
    """A field match's value as written after ``field:``."""
    if isinstance(node, Term):
        return quote(node.value)
    if isinstance(node, Wildcard):
        return _keep_outer_spaces("*".join(_escape_inner(part) for part in node.parts))
    if isinstance(node, Exists):
        return "*"
    raise AssertionError(node)  # pragma: no cover


def _list_field(node: Node) -> str | None:
    """The one field of a boolean combination of matches on it (a value list), else None."""
    if isinstance(node, (Term, Wildcard)):
        return node.field
    if isinstance(node, Exists):
        return node.field
    if isinstance(node, Not):
        return _list_field(node.item)
    if isinstance(node, (Or, And)):
        fields = {_list_field(item) for item in node.items}
        if len(fields) == 1:
            return fields.pop()
    return None


def _render_values(node: Node, parent: int) -> str:
    """A value-list expression (fields left out), parenthesized by precedence."""
    if isinstance(node, Or):
        text = " or ".join(_render_values(item, 1) for item in node.items)
        return f"({text})" if parent > 1 else text
    if isinstance(node, And):
        text = " and ".join(_render_values(item, 2) for item in node.items)
        return f"({text})" if parent > 2 else text
    if isinstance(node, Not):
        return "not " + _render_values(node.item, 3)
    return _value_text(node)


def _check_case(node: Node, strict: bool) -> None:
    if strict and isinstance(node, (Term, Wildcard)) and node.case_insensitive:
        raise KqlRenderError(f"KQL cannot express the case-insensitive match on {node.field or 'any field'!r}")


def _render(node: Node, parent: int, strict: bool) -> str:
    # parent: 0 top, 1 inside or, 2 inside and, 3 inside not
    _check_case(node, strict)
    if isinstance(node, (Or, And)):
        field = _list_field(node)
        if field is not None:
            for leaf in _leaves(node):
                _check_case(leaf, strict)
            return f"{_field_text(field)}:({_render_values(node, 0)})"
    if isinstance(node, Or):
        text = " or ".join(_render(item, 1, strict) for item in node.items)
        return f"({text})" if parent > 1 else text
    if isinstance(node, And):
        text = " and ".join(_render(item, 2, strict) for item in node.items)
        return f"({text})" if parent > 2 else text
    if isinstance(node, Not):
        return "not " + _render(node.item, 3, strict)
    if isinstance(node, MatchAll):
        return "*"
    if isinstance(node, (Term, Wildcard)) and node.field is None:
        return _value_text(node)
    if isinstance(node, (Term, Wildcard, Exists)):
        return f"{_field_text(node.field)}:{_value_text(node)}"
    if isinstance(node, Range):
        return f"{_field_text(node.field)} {node.operator} {quote(node.value)}"
    if isinstance(node, Nested):
        return f"{_field_text(node.field)}:{{ {_render(node.query, 0, strict)} }}"
    raise TypeError(f"not a KQL node: {node!r}")


def _leaves(node: Node) -> list[Node]:
    if isinstance(node, (Or, And)):
        return [leaf for item in node.items for leaf in _leaves(item)]
    if isinstance(node, Not):
        return _leaves(node.item)
    return [node]


def to_kql(node: Node, *, strict: bool = True) -> str:
    """Render a syntax tree as KQL text that parses back to an equivalent query.

    Matches on one field combined with and/or/not are folded into a value list
    (``a:(x or y)``). A case-insensitive match has no KQL form: with ``strict``
    it raises ``KqlRenderError``; without, it is rendered as a case-sensitive one.
    """
    return _render(node, 0, strict)
