"""Exported KQL is KQL Elastic's own grammar reads, meaning what the original meant.

Differential against Elastic's parser: lib/kql of github.com/elastic/detection-rules
(its lark grammar kql.g and the AST Elastic's tooling builds), loaded at test
time from the detection-rules checkout named by the environment variable
DETECTION_RULES_CHECKOUT (the one every differential test against Elastic
reads; see tests/shared_corpus.py). Elastic's code is never copied into the project; without it
these tests skip. Input: Elastic's 729 public KQL queries (../shared/corpus).

Elastic's AST types a literal by how it was written (``403`` is a Number,
``"403"`` a String), and its optimizer orders value lists by those types;
gatewatch's tree keeps the text only, as Elasticsearch matches both alike. So
trees are compared with literals as text and and/or items as sets, and
exactly wherever the original has no number, boolean or free-text literal.

Where gatewatch and lib/kql read the original itself differently, the trees
cannot be compared (the export keeps gatewatch's reading, which Elastic then
parses): lib/kql takes ``?`` in an unquoted value as a wildcard (gatewatch,
like Kibana's KQL, has only ``*``), and a backslash-u escape (``\\u0000``)
inside quotes as text (gatewatch unescapes it). Such queries must still parse.
"""
from __future__ import annotations

import importlib
from datetime import date
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gatewatch.kql import parse, to_kql
from gatewatch.rules import load_rules
from gatewatch.rules.elastic_export import export_rule
from gatewatch.rules.elastic_meta import elastic_query
from shared_corpus import DETECTION_RULES_CHECKOUT, KQL_QUERIES, elastic_lib_kql

EXCEPTION = 'kubernetes.audit.objectRef.namespace:"kube-system" and user.name:system\\:serviceaccount\\:*'


@pytest.fixture(scope="module")
def elastic() -> ModuleType:
    folder = elastic_lib_kql()
    if folder is None:
        pytest.skip(
            f"{DETECTION_RULES_CHECKOUT} is not set: point it at a github.com/elastic/detection-rules "
            "checkout to check exported KQL against Elastic's own grammar (its lib/kql)"
        )
    folder = str(folder)
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("kql")
    finally:
        sys.path.remove(folder)


@pytest.fixture(scope="module")
def queries() -> list[dict[str, Any]]:
    if not KQL_QUERIES.is_file():
        pytest.skip(f"Elastic's public KQL queries are not at {KQL_QUERIES} (set GATEWATCH_KQL_CORPUS)")
    with KQL_QUERIES.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def comparable(node: Any, elastic: ModuleType, *, exact: bool = False) -> Any:
    """Elastic's AST as plain data; unless ``exact``, literals as text."""
    ast = elastic.ast
    if not exact and isinstance(node, (ast.Number, ast.Boolean, ast.String)) and not isinstance(node, ast.Wildcard):
        value = node.value
        return ("literal", str(value).lower() if isinstance(value, bool) else str(value))
    if not exact and isinstance(node, ast.List):
        # and/or are commutative; Elastic's optimizer orders a list by its literals' types
        return (type(node).__name__, tuple(sorted((comparable(item, elastic) for item in node.items), key=repr)))
    if isinstance(node, ast.KqlNode):
        slots = [slot for cls in type(node).__mro__ for slot in getattr(cls, "__slots__", ())]
        if not exact and isinstance(node, ast.FreeText):
            slots = [slot for slot in slots if slot != "is_quoted"]
        return (type(node).__name__, tuple(comparable(getattr(node, slot), elastic, exact=exact) for slot in slots))
    if isinstance(node, (list, tuple)):
        return tuple(comparable(item, elastic, exact=exact) for item in node)
    return node


def typed_literals(node: Any, elastic: ModuleType) -> bool:
    ast = elastic.ast
    if isinstance(node, (ast.Number, ast.Boolean, ast.FreeText)):
        return True
    if isinstance(node, ast.KqlNode):
        slots = [slot for cls in type(node).__mro__ for slot in getattr(cls, "__slots__", ())]
        return any(typed_literals(getattr(node, slot), elastic) for slot in slots)
    if isinstance(node, (list, tuple)):
        return any(typed_literals(item, elastic) for item in node)
    return False


_QUOTED_UNICODE_ESCAPE = re.compile(r'"(?:[^"\\]|\\.)*?\\u[0-9a-fA-F]{4}')


def read_differently(query: str, original: Any, elastic: ModuleType) -> bool:
    """The original means something else to lib/kql than to gatewatch (see the module docstring)."""
    def question_wildcard(node: Any) -> bool:
        if isinstance(node, elastic.ast.Wildcard):
            return "?" in node.value
        if isinstance(node, elastic.ast.KqlNode):
            return any(question_wildcard(getattr(node, slot)) for cls in type(node).__mro__
                       for slot in getattr(cls, "__slots__", ()))
        if isinstance(node, (list, tuple)):
            return any(question_wildcard(item) for item in node)
        return False

    return bool(_QUOTED_UNICODE_ESCAPE.search(query)) or question_wildcard(original)


def test_every_public_query_as_gatewatch_exports_it_parses_with_elastics_grammar_to_the_same_tree(elastic, queries):
    refused, different, exact, incomparable = [], [], 0, 0
    for rule in queries:
        original = elastic.parse(rule["query"])
        ours = to_kql(parse(rule["query"]))
        try:
            exported = elastic.parse(ours)
        except elastic.KqlParseError as error:
            refused.append(f"{rule['file']}: {error}")
            continue
        if read_differently(rule["query"], original, elastic):
            incomparable += 1
        elif comparable(exported, elastic) != comparable(original, elastic):
            different.append(rule["file"])
        elif not typed_literals(original, elastic):
            assert comparable(exported, elastic, exact=True) == comparable(original, elastic, exact=True), rule["file"]
            exact += 1
    assert not refused, "\n".join(refused)
    assert not different, different
    assert len(queries) == 729 and exact > 0 and incomparable < 10


def test_exceptions_folded_into_any_public_query_parse_as_query_and_not_exception(elastic, queries):
    for rule in queries:
        folded = elastic.parse(elastic_query(rule["query"], [EXCEPTION]))
        expected = elastic.parse(f"({rule['query']}) and not ({EXCEPTION})")
        if read_differently(rule["query"], expected, elastic):
            continue
        assert comparable(folded, elastic) == comparable(expected, elastic), rule["file"]


def test_the_shipped_rules_export_kql_elastic_reads_as_written(elastic):
    for rule in load_rules().rules:
        exported = export_rule(rule, today=date(2026, 1, 1)).api["query"]
        expected = rule.query
        if rule.exceptions:
            expected = f"({rule.query}) and " + " and ".join(f"not ({exception})" for exception in rule.exceptions)
        assert comparable(elastic.parse(exported), elastic) == comparable(elastic.parse(expected), elastic), rule.id
