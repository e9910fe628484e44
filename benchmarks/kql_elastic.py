"""KQL evaluation: gatewatch beside Elastic's own evaluator (detection-rules lib/kql), in one run.

    python benchmarks/kql_elastic.py [--elastic-kql DETECTION_RULES_CHECKOUT] [--documents 2207] [--repeat 5]
                                     [--corpus ../shared/corpus/elastic-kql-queries.jsonl]

Rules: Elastic's Kubernetes query rules from the public KQL corpus (type
``query``, a Kubernetes integration or a query on ``kubernetes.*``: 36 rules).
Documents (2,207 by default; no public set of Kubernetes audit documents
exists): the 14 of examples/ (11 audit events, 3 AdmissionReviews, through
gatewatch.documents), then, rule by rule in turn, a document built on one of
them that the rule matches and a near miss of it (tests/kql_documents.py:
each field match written in, one branch of each ``or``; the miss changes,
drops or doubles one field). Deterministic (seed 2207).

Every evaluator computes the same verdict matrix (rules x documents); the
verdicts must be identical, else the script says where and exits 1. Figures are
query evaluations per CPU-second (``time.process_time``, best of ``--repeat``):

- ``elastic lib/kql``: ``kql.get_evaluator(query)`` per rule, called per pair
  (the peer; needs ``--elastic-kql``: a checkout of github.com/elastic/detection-rules,
  e.g. ``git clone --depth 1 https://github.com/elastic/detection-rules``, and
  its dependency ``pip install eql==1.0.1``; without it only gatewatch's figures print);
- ``gatewatch closures``: ``compile_query`` per rule, called per pair (the evaluator before issue 12);
- ``gatewatch generated, per pair``: the rule set compiled as one module (``kql.codegen``),
  each pair with a fresh ``FieldValues`` (no look-up shared);
- ``gatewatch generated, rule set``: as the engine runs it: one ``FieldValues`` per
  document, shared by the 36 rules;
- ``gatewatch engine``: also the rule index (``prefilter.RuleIndex``), rules it leaves out are False.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from figures import report  # noqa: E402  (sibling script)
from kql_documents import matching_document, near_miss  # noqa: E402
from shared_corpus import KQL_QUERIES  # noqa: E402  (../shared/corpus, from a clone or a worktree)

from gatewatch.documents import document_from_admission_review, document_from_audit_event  # noqa: E402
from gatewatch.kql import compile_query, parse  # noqa: E402
from gatewatch.kql.codegen import compile_program  # noqa: E402
from gatewatch.prefilter import RuleIndex  # noqa: E402

Matrix = list[list[bool]]


def kubernetes_query_rules(corpus: Path) -> list[dict]:
    rules = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [rule for rule in rules
            if rule["type"] == "query" and ("kubernetes" in rule["query"] or "kubernetes" in rule["file"])]


def example_documents() -> list[dict]:
    examples = REPO / "examples"
    documents = [document_from_audit_event(json.loads(line))
                 for line in (examples / "audit" / "audit.jsonl").read_text().splitlines() if line.strip()]
    documents += [document_from_admission_review(json.loads(path.read_text()))
                  for path in sorted((examples / "reviews").glob("*.json"))]
    return documents


def make_documents(queries: list[str], count: int) -> list[dict]:
    rng = random.Random(2207)
    bases = example_documents()
    documents = list(bases)[:count]
    nodes = [parse(query) for query in queries]
    position = 0
    while len(documents) < count:
        node = nodes[position % len(nodes)]
        matching = matching_document(node, base=rng.choice(bases), rng=rng)
        documents.append(matching)
        if len(documents) < count:
            documents.append(near_miss(matching, node, rng=rng))
        position += 1
    # A JSON round trip: plain dicts, lists and scalars, as a parsed audit line is.
    return json.loads(json.dumps(documents))


def per_pair(evaluators: list[Callable[[Any], Any]], documents: list[dict]) -> Matrix:
    return [[bool(evaluate(document)) for document in documents] for evaluate in evaluators]


def timed(run: Callable[[], Matrix], repeat: int) -> tuple[float, Matrix]:
    best, result = float("inf"), []
    for _ in range(repeat):
        started = time.process_time()
        result = run()
        best = min(best, time.process_time() - started)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elastic-kql", type=Path, help="a checkout of elastic/detection-rules (its lib/kql is used)")
    parser.add_argument("--corpus", type=Path, default=KQL_QUERIES)
    parser.add_argument("--documents", type=int, default=2207)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.corpus.is_file():
        parser.error(f"KQL corpus not found at {args.corpus} (--corpus or GATEWATCH_KQL_CORPUS)")

    rules = kubernetes_query_rules(args.corpus)
    queries = [rule["query"] for rule in rules]
    documents = make_documents(queries, args.documents)
    pairs = len(queries) * len(documents)
    print(f"load average {os.getloadavg()[0]:.2f}; {len(queries)} Kubernetes query rules x {len(documents):,} "
          f"documents = {pairs:,} pairs; Python {sys.version.split()[0]}; best of {args.repeat}, CPU time")

    closures = [compile_query(query) for query in queries]
    nodes = [closure.node for closure in closures]
    program = compile_program(nodes)
    index = RuleIndex(list(enumerate(program.functions)), nodes, resolvers=program.resolvers)
    separate = [program.matcher(position) for position in range(len(nodes))]

    def rule_set() -> Matrix:
        by_document = []
        functions = program.functions
        for document in documents:
            values = program.values(document)
            by_document.append([function(values) for function in functions])
        return [list(column) for column in zip(*by_document)]

    def engine() -> Matrix:
        matrix = [[False] * len(documents) for _ in nodes]
        for column, document in enumerate(documents):
            values = index.values(document)
            for position, function in index.candidates_in(values):
                if function(values):
                    matrix[position][column] = True
        return matrix

    runs: dict[str, Callable[[], Matrix]] = {
        "gatewatch closures (per pair)": lambda: per_pair(closures, documents),
        "gatewatch generated, per pair": lambda: per_pair(separate, documents),
        "gatewatch generated, rule set": rule_set,
        "gatewatch engine (index + generated)": engine,
    }
    if args.elastic_kql is not None:
        sys.path.insert(0, str(args.elastic_kql.resolve() / "lib" / "kql"))
        import kql as elastic_kql  # Elastic's lib/kql, from the checkout

        elastic = [elastic_kql.get_evaluator(query) for query in queries]
        runs = {"elastic lib/kql (per pair)": lambda: per_pair(elastic, documents), **runs}
    else:
        print("(no --elastic-kql checkout given: gatewatch's figures only; see --help for how to get one)")

    results: dict[str, tuple[float, Matrix]] = {name: timed(run, args.repeat) for name, run in runs.items()}
    reference_name = "elastic lib/kql (per pair)" if args.elastic_kql is not None else "gatewatch closures (per pair)"
    reference_seconds, reference = results[reference_name]
    matches = sum(map(sum, reference))
    print(f"matching pairs: {matches:,} of {pairs:,}; rules matching at least once: "
          f"{sum(1 for row in reference if any(row))} of {len(queries)}")
    print(f"{'evaluator':<38} {'evaluations/CPU-s':>18} {'vs ' + reference_name.split(' (')[0]:>22}  verdicts")
    differing = 0
    for name, (seconds, matrix) in results.items():
        same = sum(a == b for row, other in zip(matrix, reference) for a, b in zip(row, other))
        differing += pairs - same
        print(f"{name:<38} {pairs / seconds:>18,.0f} {reference_seconds / seconds:>21.1f}x  "
              + ("identical" if same == pairs else f"{pairs - same:,} DIFFER"))
    if args.elastic_kql is not None:
        seconds = results["gatewatch engine (index + generated)"][0]
        ratio = reference_seconds / seconds
        report(f"KQL evaluations/CPU-s, {len(queries)} rules x {len(documents):,} documents",
               gatewatch=f"{pairs / seconds:,.0f}/s", peer=f"{pairs / reference_seconds:,.0f}/s Elastic lib/kql",
               ratio=f"{ratio:.1f}", goal=">= 20x, identical verdicts", met=ratio >= 20 and not differing)
    if differing:
        for name, (_, matrix) in results.items():
            for position, (row, other) in enumerate(zip(matrix, reference)):
                for column, (a, b) in enumerate(zip(row, other)):
                    if a != b:
                        print(f"  {name}: rule {rules[position]['file']} document {column}: {a} vs {b}",
                              file=sys.stderr)
                        break
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
