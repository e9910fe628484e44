"""ES|QL text -> ``gatewatch.esql.ast.Query`` (grammar: ``esql.lark``).

``parse`` raises ``EsqlSyntaxError`` with the position of the first token that
does not fit, and a caret under it.
"""
from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from gatewatch.errors import EsqlSyntaxError
from gatewatch.esql import ast

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "\\": "\\"}


@cache
def _parser() -> Lark:
    grammar = resources.files("gatewatch.esql").joinpath("esql.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


def unquote_string(text: str) -> str:
    """A STRING token's value: triple-quoted text as it is, else with ES|QL's five escapes."""
    if text.startswith('"""'):
        return text[3:-3]
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            out.append(_ESCAPES[body[index + 1]])  # the lexer admits only these
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def unquote_identifier(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1].replace("``", "`")
    return text


def _unquote_name_pattern(text: str) -> str:
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "`":
            end = index + 1
            while True:
                end = text.index("`", end)
                if text.startswith("``", end):
                    end += 2
                    continue
                break
            current.append(text[index + 1:end].replace("``", "`"))
            index = end + 1
        elif char == ".":
            parts.append("".join(current))
            current = []
            index += 1
        else:
            current.append(char)
            index += 1
    parts.append("".join(current))
    return ".".join(parts)


class _Refused(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


def _offset(meta: Any) -> int:
    return getattr(meta, "start_pos", 0) or 0


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def _source(self, meta: Any) -> str:
        return self.text[meta.start_pos:meta.end_pos]

    # -- query and commands

    def start(self, meta: Any, commands: list[Any]) -> ast.Query:
        return ast.Query(commands=tuple(commands), text=self.text)

    def from_command(self, meta: Any, items: list[Any]) -> ast.From:
        indices = tuple(item for item in items if isinstance(item, str))
        metadata = next((item for item in items if isinstance(item, tuple)), ())
        return ast.From(indices=indices, metadata=metadata, offset=_offset(meta))

    def index_pattern(self, meta: Any, items: list[Token]) -> str:
        token = items[0]
        return unquote_string(token) if token.type == "STRING" else str(token)

    def metadata(self, meta: Any, items: list[Token]) -> tuple[str, ...]:
        return tuple(unquote_identifier(token) for token in items)

    def row_command(self, meta: Any, items: list[Any]) -> ast.Row:
        return ast.Row(fields=items[0], offset=_offset(meta))

    def where_command(self, meta: Any, items: list[Any]) -> ast.Where:
        return ast.Where(condition=items[0], offset=_offset(meta))

    def eval_command(self, meta: Any, items: list[Any]) -> ast.Eval:
        return ast.Eval(fields=items[0], offset=_offset(meta))

    def grok_command(self, meta: Any, items: list[Any]) -> ast.Grok:
        value, *patterns = items
        return ast.Grok(
            input=value, patterns=tuple(text for text, _ in patterns), offset=_offset(meta),
            pattern_offset=patterns[0][1],
        )

    def dissect_command(self, meta: Any, items: list[Any]) -> ast.Dissect:
        value, (pattern, pattern_offset), *options = items
        separator = ""
        for name, literal, offset in options:
            if isinstance(literal, tuple):
                literal = ast.Literal(value=literal[0], type="keyword")
            if name.lower() != "append_separator":
                raise _Refused(f"invalid option [{name}] for DISSECT: only APPEND_SEPARATOR", offset)
            if not isinstance(literal, ast.Literal) or literal.type != "keyword":
                raise _Refused("APPEND_SEPARATOR must be a string", offset)
            separator = literal.value
        return ast.Dissect(
            input=value, pattern=pattern, append_separator=separator, offset=_offset(meta),
            pattern_offset=pattern_offset,
        )

    def command_option(self, meta: Any, items: list[Any]) -> tuple[str, Any, int]:
        return str(items[0]), items[1], _offset(meta)

    def keep_command(self, meta: Any, items: list[str]) -> ast.Keep:
        return ast.Keep(patterns=tuple(items), offset=_offset(meta))

    def drop_command(self, meta: Any, items: list[str]) -> ast.Drop:
        return ast.Drop(patterns=tuple(items), offset=_offset(meta))

    def name_pattern(self, meta: Any, items: list[Token]) -> str:
        return _unquote_name_pattern(str(items[0]))

    def rename_command(self, meta: Any, items: list[tuple[str, str]]) -> ast.Rename:
        return ast.Rename(pairs=tuple(items), offset=_offset(meta))

    def rename_as(self, meta: Any, items: list[str]) -> tuple[str, str]:
        return items[0], items[1]

    def rename_assign(self, meta: Any, items: list[str]) -> tuple[str, str]:
        return items[1], items[0]  # new = old

    def limit_command(self, meta: Any, items: list[Token]) -> ast.Limit:
        return ast.Limit(count=int(items[0]), offset=_offset(meta))

    def sort_command(self, meta: Any, items: list[ast.Order]) -> ast.Sort:
        return ast.Sort(orders=tuple(items), offset=_offset(meta))

    def order_expression(self, meta: Any, items: list[Any]) -> ast.Order:
        expression, *rest = items
        descending = "desc" in rest
        nulls_first = True if "first" in rest else False if "last" in rest else None
        return ast.Order(expression=expression, descending=descending, nulls_first=nulls_first)

    def ordering(self, meta: Any, items: list[Token]) -> str:
        return str(items[0]).lower()

    def nulls_position(self, meta: Any, items: list[Token]) -> str:
        return str(items[0]).lower()

    def stats_command(self, meta: Any, items: list[Any]) -> ast.Stats:
        aggregates = tuple(item for item in items if isinstance(item, ast.Aggregate))
        groups = next((item for item in items if isinstance(item, tuple)), ())
        return ast.Stats(aggregates=aggregates, groups=groups, offset=_offset(meta))

    def stats_by_only(self, meta: Any, items: list[Any]) -> ast.Stats:
        return ast.Stats(aggregates=(), groups=items[0], offset=_offset(meta))

    def agg_field(self, meta: Any, items: list[Any]) -> ast.Aggregate:
        field = items[0]
        return ast.Aggregate(
            name=field.name, expression=field.expression, where=items[1] if len(items) > 1 else None,
            offset=field.offset,
        )

    def mv_expand_command(self, meta: Any, items: list[Any]) -> ast.MvExpand:
        return ast.MvExpand(column=items[0], offset=_offset(meta))

    def fields(self, meta: Any, items: list[ast.Field]) -> tuple[ast.Field, ...]:
        return tuple(items)

    def named_field(self, meta: Any, items: list[Any]) -> ast.Field:
        return ast.Field(name=items[0], expression=items[1], offset=_offset(meta))

    def unnamed_field(self, meta: Any, items: list[Any]) -> ast.Field:
        return ast.Field(name=self._source(meta), expression=items[0], offset=_offset(meta))

    # -- expressions

    def or_expression(self, meta: Any, items: list[Any]) -> ast.Or:
        return ast.Or(items=tuple(items), offset=_offset(meta))

    def and_expression(self, meta: Any, items: list[Any]) -> ast.And:
        return ast.And(items=tuple(items), offset=_offset(meta))

    def logical_not(self, meta: Any, items: list[Any]) -> ast.Not:
        return ast.Not(item=items[-1], offset=_offset(meta))

    def in_list(self, meta: Any, items: list[Any]) -> ast.In:
        negated = isinstance(items[1], Token) and items[1].type == "NOT"
        values = [item for item in items[1:] if not (isinstance(item, Token) and item.type == "NOT")]
        return ast.In(value=items[0], items=tuple(values), negated=negated, offset=_offset(meta))

    def is_null(self, meta: Any, items: list[Any]) -> ast.IsNull:
        return ast.IsNull(value=items[0], negated=len(items) > 1, offset=_offset(meta))

    def _like(self, meta: Any, items: list[Any], *, regex: bool) -> ast.Like:
        value = items[0]
        negated = any(isinstance(item, Token) and item.type == "NOT" for item in items)
        patterns = items[-1]
        return ast.Like(
            value=value, patterns=tuple(text for text, _ in patterns), regex=regex, negated=negated,
            offset=_offset(meta), pattern_offsets=tuple(offset for _, offset in patterns),
        )

    def like(self, meta: Any, items: list[Any]) -> ast.Like:
        return self._like(meta, items, regex=False)

    def rlike(self, meta: Any, items: list[Any]) -> ast.Like:
        return self._like(meta, items, regex=True)

    def pattern_list(self, meta: Any, items: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return items

    def match_operator(self, meta: Any, items: list[Any]) -> ast.MatchOperator:
        return ast.MatchOperator(field=items[0], query=items[1], offset=_offset(meta))

    def comparison(self, meta: Any, items: list[Any]) -> ast.Comparison:
        left, operator, right = items
        return ast.Comparison(operator=str(operator), left=left, right=right, offset=_offset(meta))

    def arithmetic(self, meta: Any, items: list[Any]) -> ast.Arithmetic:
        left, operator, right = items
        return ast.Arithmetic(operator=str(operator), left=left, right=right, offset=_offset(meta))

    def negate(self, meta: Any, items: list[Any]) -> Any:
        sign, value = items
        if str(sign) == "+":
            return value
        if isinstance(value, ast.Literal) and value.type in ("integer", "long", "double"):
            return _number_literal(-value.value, _offset(meta))  # -9223372036854775808 is a long
        return ast.Negate(item=value, offset=_offset(meta))

    def inline_cast(self, meta: Any, items: list[Any]) -> ast.Cast:
        return ast.Cast(value=items[0], type=str(items[1]).lower(), offset=_offset(meta))

    def column(self, meta: Any, items: list[str]) -> ast.Column:
        return ast.Column(name=items[0], offset=_offset(meta))

    def qualified_name(self, meta: Any, items: list[Token]) -> str:
        return ".".join(unquote_identifier(token) for token in items)

    def call(self, meta: Any, items: list[Any]) -> ast.Call:
        name, *args = items
        return ast.Call(name=unquote_identifier(name).lower(), args=tuple(args), offset=_offset(meta))

    def call_no_args(self, meta: Any, items: list[Any]) -> ast.Call:
        return ast.Call(name=unquote_identifier(items[0]).lower(), args=(), offset=_offset(meta))

    def call_star(self, meta: Any, items: list[Any]) -> ast.Call:
        return ast.Call(name=unquote_identifier(items[0]).lower(), args=(), offset=_offset(meta), star=True)

    # -- constants

    def null(self, meta: Any, items: list[Any]) -> ast.Literal:
        return ast.Literal(value=None, type="null", offset=_offset(meta))

    def qualified_integer(self, meta: Any, items: list[Token]) -> ast.Literal:
        from gatewatch.esql.values import duration_literal  # the units live with the value model

        amount, unit = int(items[0]), str(items[1])
        try:
            value, kind = duration_literal(amount, unit)
        except ValueError as error:
            raise _Refused(str(error), items[1].start_pos or 0) from None
        return ast.Literal(value=value, type=kind, offset=_offset(meta))

    def integer(self, meta: Any, items: list[Token]) -> ast.Literal:
        return _number_literal(int(items[0]), _offset(meta))

    def decimal(self, meta: Any, items: list[Token]) -> ast.Literal:
        return ast.Literal(value=float(items[0]), type="double", offset=_offset(meta))

    def signed_number(self, meta: Any, items: list[Any]) -> ast.Literal:
        number = items[-1]
        if len(items) == 2 and str(items[0]) == "-":
            return _number_literal(-number.value, number.offset) if number.type != "double" else ast.Literal(
                value=-number.value, type="double", offset=number.offset
            )
        return number

    def boolean(self, meta: Any, items: list[Token]) -> ast.Literal:
        return ast.Literal(value=str(items[0]).lower() == "true", type="boolean", offset=_offset(meta))

    def string(self, meta: Any, items: list[Token]) -> tuple[str, int]:
        return unquote_string(str(items[0])), items[0].start_pos or 0

    def string_literal(self, meta: Any, items: list[tuple[str, int]]) -> ast.Literal:
        return ast.Literal(value=items[0][0], type="keyword", offset=_offset(meta))

    def list_literal(self, meta: Any, items: list[Any]) -> ast.Literal:
        literals = [ast.Literal(value=item[0], type="keyword") if isinstance(item, tuple) else item for item in items]
        kinds = {literal.type for literal in literals}
        kind = "double" if "double" in kinds else "long" if "long" in kinds else kinds.pop()
        values = tuple(literal.value for literal in literals)
        return ast.Literal(value=values if len(values) > 1 else values[0], type=kind, offset=_offset(meta))

    def parameter(self, meta: Any, items: list[Token]) -> ast.Parameter:
        return ast.Parameter(text=str(items[0]), offset=_offset(meta))

    def __default__(self, data: Any, children: list[Any], meta: Any) -> Any:
        raise _Refused(f"internal: no AST for {data}", _offset(meta))  # pragma: no cover - grammar and tree agree


def _number_literal(value: int, offset: int) -> ast.Literal:
    if -(2**31) <= value < 2**31:
        return ast.Literal(value=value, type="integer", offset=offset)
    if -(2**63) <= value < 2**63:
        return ast.Literal(value=value, type="long", offset=offset)
    return ast.Literal(value=float(value), type="double", offset=offset)  # ES|QL: too large for a long


def parse(query: str) -> ast.Query:
    """Parse ES|QL text; raises ``EsqlSyntaxError`` with position and caret."""
    if not isinstance(query, str) or not query.strip():
        raise EsqlSyntaxError("empty ES|QL query", query=str(query or ""), offset=0)
    try:
        tree = _parser().parse(query)
    except UnexpectedInput as error:
        reason, offset = _explain(error, query)
        raise EsqlSyntaxError(reason, query=query, offset=offset) from None
    try:
        result = _ToAst(query).transform(tree)
    except VisitError as error:
        cause = error.orig_exc
        if isinstance(cause, _Refused):
            raise EsqlSyntaxError(cause.reason, query=query, offset=cause.offset, unsupported=True) from None
        raise
    return result


def _explain(error: UnexpectedInput, query: str) -> tuple[str, int]:
    if isinstance(error, UnexpectedEOF):
        return "unexpected end of query", len(query)
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream
        char = query[position] if position < len(query) else ""
        if char == "'":
            return "single-quoted strings are not ES|QL: use double quotes", position
        if char == '"':
            return "unterminated string, or an escape other than \\t \\n \\r \\\" \\\\", position
        return f"unexpected character {char!r}", position
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            return "unexpected end of query", len(query)
        offset = token.start_pos if token.start_pos is not None else 0
        if str(token).startswith("'"):
            return "single-quoted strings are not ES|QL: use double quotes", offset
        if offset == 0:
            return "a query starts with FROM or ROW", 0
        previous = query[:offset].rstrip()
        if previous.endswith("|"):
            word = str(token).split()[0] if str(token).split() else str(token)
            return f"unknown or unsupported command {word!r}", offset
        return f"unexpected {str(token)!r}", offset
    return str(error), getattr(error, "pos_in_stream", 0) or 0
