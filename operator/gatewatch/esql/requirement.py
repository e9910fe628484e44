"""What an ES|QL query requires of a document, as a KQL syntax tree.

The rule index (``gatewatch.prefilter``) and ``gatewatch rules lint`` read a
rule's conditions as KQL trees. For an ES|QL rule that is what its WHERE
commands require of document fields: ``field == "v"``, ``field IN (...)``,
``field IS NOT NULL``, ``field LIKE "a*"``, ``STARTS_WITH`` / ``ENDS_WITH`` and
``KQL()``, joined by AND (an OR only when every branch says something). The
tree is implied by the query, never the query itself: every document the query
matches satisfies it (ES|QL's ``==`` on a multi-value is null, KQL's term
matches any value: weaker, which is what a prefilter may be).
"""
from __future__ import annotations

from collections.abc import Callable

from gatewatch.errors import GatewatchError
from gatewatch.esql import ast
from gatewatch.esql.names import Binding, DocumentField
from gatewatch.kql import ast as kql_ast
from gatewatch.kql import compile_query as compile_kql


def requirement(condition: ast.Expression, resolve: Callable[[str], Binding]) -> kql_ast.Node | None:
    """A KQL tree implied by ``condition`` over document fields (None: nothing certain)."""
    if isinstance(condition, ast.And):
        parts = [part for part in (requirement(item, resolve) for item in condition.items) if part is not None]
        return None if not parts else parts[0] if len(parts) == 1 else kql_ast.And(tuple(parts))
    if isinstance(condition, ast.Or):
        parts = [requirement(item, resolve) for item in condition.items]
        return None if any(part is None for part in parts) else kql_ast.Or(tuple(parts))  # type: ignore[arg-type]

    def document_field(node: ast.Expression) -> str | None:
        if isinstance(node, ast.Column):
            binding = resolve(node.name)
            return binding.field if isinstance(binding, DocumentField) else None
        return None

    def text(node: ast.Expression) -> str | None:
        return node.value if isinstance(node, ast.Literal) and isinstance(node.value, str) else None

    if isinstance(condition, ast.Comparison) and condition.operator == "==":
        for column, literal in ((condition.left, condition.right), (condition.right, condition.left)):
            name, value = document_field(column), text(literal)
            if name is not None and value is not None:
                return kql_ast.Term(name, value)
    if isinstance(condition, ast.In) and not condition.negated:
        name = document_field(condition.value)
        values = [text(item) for item in condition.items]
        if name is not None and values and all(value is not None for value in values):
            terms = tuple(kql_ast.Term(name, value) for value in values)  # type: ignore[arg-type]
            return terms[0] if len(terms) == 1 else kql_ast.Or(terms)
    if isinstance(condition, ast.IsNull) and condition.negated:
        name = document_field(condition.value)
        if name is not None:
            return kql_ast.Exists(name)
    if isinstance(condition, ast.Like) and not condition.regex and not condition.negated and len(condition.patterns) == 1:
        name, pattern = document_field(condition.value), condition.patterns[0]
        if name is not None and "?" not in pattern and "\\" not in pattern:
            return kql_ast.Wildcard.from_pattern(name, pattern) if "*" in pattern else kql_ast.Term(name, pattern)
    if isinstance(condition, ast.Call) and condition.name in ("starts_with", "ends_with") and len(condition.args) == 2:
        name, affix = document_field(condition.args[0]), text(condition.args[1])
        if name is not None and affix is not None:
            parts = (affix, "") if condition.name == "starts_with" else ("", affix)
            return kql_ast.Wildcard(name, parts)
    if isinstance(condition, ast.Call) and condition.name == "kql" and condition.args:
        query = text(condition.args[0])
        if query is not None:
            try:
                return compile_kql(query).node
            except GatewatchError:
                return None
    return None
