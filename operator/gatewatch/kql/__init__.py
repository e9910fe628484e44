"""Kibana Query Language: parse KQL text, compile it to fast document predicates.

    >>> from gatewatch.kql import compile_query
    >>> matches = compile_query('kubernetes.audit.verb:"create" and container.image.name:busybox*')
    >>> matches({"kubernetes": {"audit": {"verb": "create"}}, "container": {"image": {"name": ["busybox:1.36"]}}})
    True

``parse`` gives the syntax tree (``gatewatch.kql.ast``), ``to_kql`` renders one
back to text, ``field_values`` resolves a field path in a document.
"""
from gatewatch.kql.ast import And, Exists, FieldMatch, MatchAll, Nested, Node, Not, Or, Range, Term, Wildcard
from gatewatch.kql.compiler import CompiledQuery, compile_query, referenced_fields
from gatewatch.kql.fields import compile_path, field_values
from gatewatch.kql.parser import KqlRenderError, escape_unquoted, parse, quote, to_kql

__all__ = [
    "And",
    "CompiledQuery",
    "Exists",
    "FieldMatch",
    "KqlRenderError",
    "MatchAll",
    "Nested",
    "Node",
    "Not",
    "Or",
    "Range",
    "Term",
    "Wildcard",
    "compile_path",
    "compile_query",
    "escape_unquoted",
    "field_values",
    "parse",
    "quote",
    "referenced_fields",
    "to_kql",
]
