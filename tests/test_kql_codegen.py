"""Generated rule code (kql.codegen): rule text is data, never code.

A rule file is user input: its field names, values and wildcards reach the
generated module only as string literals. These rules try to break out of the
literal (quotes, backslashes, newlines) and to run code (``__import__``); the
generated program must match exactly what the closure evaluator matches, and
nothing they name may run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gatewatch.engine import RuleEngine
from gatewatch.kql import Exists, Term, Wildcard, compile_query, parse, quote, to_kql
from gatewatch.kql.codegen import compile_program
from gatewatch.rules import load_rules_text


def hostile_texts(marker: Path) -> list[str]:
    """Strings that, pasted into Python source unquoted, would run code that creates ``marker``."""
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return [
        touch,
        f"x') or {touch} or ('",
        f'x") or {touch} or ("',
        f"x'''\n{touch}\n'''",
        f'x"""\n{touch}\n"""',
        f"x\\') or {touch} #",
        f"x\n{touch}\n#",
        f"{{{touch}}}",
        f"x' + str({touch}) + '",
    ]


def hostile_queries(texts: list[str]) -> list[str]:
    queries = []
    for text in texts:
        field, value = quote(text), quote(text)
        queries += [
            f"{field}:{value}",                      # one literal
            f"{field}:({value} or other)",           # a literal set
            f"{field}:*",                            # exists
            f"not {field}:{value} and b:x",          # under not
            f"a:{value}",                            # a hostile value on a plain field
            f"{field} < {value}",                    # a range
        ]
    return queries


def test_hostile_field_names_and_values_stay_literals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    texts = hostile_texts(marker)
    nodes = [parse(query) for query in hostile_queries(texts)]
    # Wildcards around the hostile text, on a plain field and on the hostile one (KQL text
    # cannot write a space in a wildcard value, the tree can).
    nodes += [Wildcard(field, ("", text, "")) for text in texts for field in ("a", text)]
    program = compile_program(nodes)

    # The source parses as Python, and every string in it is a constant, never a name being called
    # but the helpers the generator itself emits.
    tree = ast.parse(program.source)
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert called <= {"any", "map", "_any_in", "_exists"} | {f"k{i}" for i in range(len(nodes) * 4)}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "__import__" not in names
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    for text in texts:
        assert text in constants

    documents = [{}, {"a": "x", "b": "x"}]
    for text in texts:
        documents += [{text: text, "b": "x"}, {text: "other"}, {"a": text}, {"a": f"<{text}>"}, {text: f"<{text}>"}, {text: ""}]
    for document in documents:
        values = program.values(document)
        for node, function in zip(nodes, program.functions):
            assert function(values) is compile_query(node)(document)
    # Every query matched something, so every branch ran.
    assert [to_kql(node, strict=False) for node, function in zip(nodes, program.functions)
            if not any(function(program.values(document)) for document in documents)] == []
    assert not marker.exists()


def test_a_text_type_with_its_own_repr_still_becomes_a_plain_literal(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Sneaky(str):
        def __repr__(self) -> str:
            return f"__import__('pathlib').Path({str(marker)!r}).touch()"

    program = compile_program([Term(Sneaky("a"), Sneaky("x"))])
    assert program.functions[0](program.values({"a": "x"})) is True
    assert program.functions[0](program.values({"a": "y"})) is False
    assert "__import__" not in program.source
    assert not marker.exists()
    with pytest.raises(TypeError, match="must be text"):
        compile_program([Exists(7)])  # type: ignore[arg-type]


def test_a_hostile_rule_file_loads_and_matches_as_written(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = hostile_texts(marker)[1]
    query = f"{quote(text)}:{quote(text)}"
    yaml_query = query.replace("'", "''")
    ruleset = load_rules_text(f"""version: 1
ruleset: test
rules:
  - id: hostile
    name: Hostile field
    description: a field name that is Python code
    severity: low
    risk_score: 21
    type: query
    query: '{yaml_query}'
    action: alert
    exceptions:
      - '{quote(text).replace("'", "''")}:skip'
    tags: ["Rule Type: Hygiene"]
""", file="hostile.yaml")
    engine = RuleEngine(ruleset)
    assert [match.rule.id for match in engine.evaluate({text: text}, record=False)] == ["hostile"]
    assert engine.evaluate({text: "other"}, record=False) == []
    assert engine.evaluate({text: [text, "skip"]}, record=False) == []  # the exception holds
    assert not marker.exists()
