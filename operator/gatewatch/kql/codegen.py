"""A set of queries -> Python source, compiled once: one function per query.

The closure compiler (``kql.compiler``) turns a query into nested closures:
every ``and``, ``or``, ``not`` and field match is a Python call of its own,
and every query resolves its fields itself. Here a whole rule set becomes one
generated module instead: ``and`` / ``or`` / ``not`` are Python's own
operators, a literal is a literal (``'create' in V['kubernetes.audit.verb']``),
and fields are read from a ``FieldValues`` shared by all the queries (and the
rule index) evaluating one document, so each field is resolved once per
document.

Only the structure is generated. What a value must be for a match to hold is
the closure compiler's (``any_value_test``, ``range_test``, the linear-time
wildcards of ``kql.glob``), handed to the module as constants, so the two
evaluators cannot drift apart on semantics; a property test holds them to
identical verdicts. Field names and values enter the source only through
``repr`` (a string literal) and never as code. A subtree nested deeper than
``MAX_DEPTH`` (Python's compiler limits nesting) is called as a closure.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from gatewatch.kql.ast import And, Exists, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard
from gatewatch.kql.compiler import (
    any_value_test, compile_predicate, group_or_by_field, is_plain_term, is_present, range_test,
)
from gatewatch.kql.fields import FieldValues, Resolvers

GeneratedQuery: TypeAlias = Callable[[FieldValues], bool]
# Deeper subtrees become closures: CPython's parser refuses about 200 nested parentheses.
MAX_DEPTH = 40
_CHUNK = 32  # functions per compile() call


class Program:
    """Compiled queries of one set, each called with the ``FieldValues`` of a document.

    ``functions[i]`` is query i; ``values(document)`` makes the ``FieldValues``
    they share; ``source`` is the generated module (for reading, and tracebacks).
    """

    __slots__ = ("functions", "resolvers", "source")

    def __init__(self, *, functions: tuple[GeneratedQuery, ...], resolvers: Resolvers, source: str) -> None:
        self.functions = functions
        self.resolvers = resolvers
        self.source = source

    def values(self, document: Mapping[str, Any]) -> FieldValues:
        return FieldValues(document, self.resolvers)

    def matcher(self, position: int) -> Callable[[Mapping[str, Any]], bool]:
        """Query ``position`` as a ``document -> bool`` function (a ``FieldValues`` of its own per call)."""
        function, resolvers = self.functions[position], self.resolvers
        return lambda document: function(FieldValues(document, resolvers))


def compile_program(queries: Sequence[Node], *, resolvers: Resolvers | None = None) -> Program:
    """Generate and compile one function per query (``MatchAll`` for an always-true one)."""
    generator = _Generator()
    functions = [f"def q{position}(V):\n    return {generator.expression(node, depth=0)}\n"
                 for position, node in enumerate(queries)]
    namespace: dict[str, Any] = dict(generator.constants)
    namespace.update(_any_in=_any_in, _exists=_exists, __builtins__={"any": any, "map": map})
    # Compiled a chunk at a time: CPython's compiler needs tens of times the source's size while it
    # works (30 MiB for 1,000 rules at once), and the process would keep that high-water mark.
    for start in range(0, len(functions), _CHUNK):
        chunk = "\n".join(functions[start:start + _CHUNK])
        exec(compile(chunk, "<gatewatch.kql.codegen>", "exec"), namespace)  # noqa: S102 - our own generated source
    source = "\n".join(functions)
    return Program(
        functions=tuple(namespace[f"q{position}"] for position in range(len(queries))),
        resolvers=Resolvers() if resolvers is None else resolvers,
        source=source,
    )


def _literal(text: str | None) -> str:
    """Rule text as a Python string literal, the only way it enters generated source.

    ``str.__repr__`` itself, whatever the type: a ``str`` subclass (a parser's
    token) could define a ``__repr__`` that is not a literal.
    """
    if text is None:  # free text: no field
        return "None"
    if not isinstance(text, str):
        raise TypeError(f"a field name or value must be text, not {type(text).__name__}")
    return str.__repr__(text)


def _any_in(members: frozenset[str], values: list[Any]) -> bool:
    """A value is one of the literal strings ``members`` (``isinstance(value, str) and value in members``)."""
    try:
        return not members.isdisjoint(values)
    except TypeError:  # an object among the values: unhashable, and no literal equals it
        return any(isinstance(value, str) and value in members for value in values)


def _exists(values: list[Any]) -> bool:
    for value in values:
        if is_present(value):
            return True
    return False


class _Generator:
    """Emits one Python expression per tree; everything that is not a literal becomes a named constant."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self._names: dict[object, str] = {}  # equal value tests are made once per program

    def constant(self, key: object, make: Callable[[], Any]) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = f"k{len(self._names)}"
            self.constants[name] = make()
        return name

    def expression(self, node: Node, *, depth: int) -> str:
        if depth > MAX_DEPTH:
            return f"{self.constant(('closure', node), lambda: compile_predicate(node))}(V.document)"
        if isinstance(node, Or):
            return self._or(node, depth=depth)
        if isinstance(node, And):
            return "(" + " and ".join(self.expression(item, depth=depth + 1) for item in node.items) + ")"
        if isinstance(node, Not):
            return f"(not {self.expression(node.item, depth=depth + 1)})"
        if isinstance(node, (Term, Wildcard)):
            return self._field_matches(node.field, [node])
        if isinstance(node, Exists):
            return f"_exists(V[{_literal(node.field)}])"
        if isinstance(node, Range):
            test = self.constant(("range", node.operator, node.value), lambda: range_test(node.operator, node.value))
            return f"any(map({test}, V[{_literal(node.field)}]))"
        if isinstance(node, Nested):  # rare: its inner query reads each element, not the document
            return f"{self.constant(('closure', node), lambda: compile_predicate(node))}(V.document)"
        if isinstance(node, MatchAll):
            return "True"
        raise TypeError(f"not a KQL node: {node!r}")

    def _or(self, node: Or, *, depth: int) -> str:
        by_field, others = group_or_by_field(node)  # as the closure compiler groups them
        parts = [self._field_matches(field, matches) for field, matches in by_field.items()]
        parts += [self.expression(item, depth=depth + 1) for item in others]
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def _field_matches(self, field: str | None, matches: list[Term | Wildcard]) -> str:
        values = f"V[{_literal(field)}]"
        if all(isinstance(match, Term) and is_plain_term(match) for match in matches):
            literals = frozenset(match.value for match in matches)  # type: ignore[union-attr]
            if len(literals) == 1:
                (literal,) = literals
                return f"({_literal(literal)} in {values})"  # list membership: == per value, as the closure
            return f"_any_in({self.constant(('in', literals), lambda: literals)}, {values})"
        key = ("test", tuple(matches))
        return f"any(map({self.constant(key, lambda: any_value_test(list(matches)))}, {values}))"
