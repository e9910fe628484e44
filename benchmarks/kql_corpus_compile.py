"""Time to parse and compile every query of the public KQL corpus, for docs/benchmarks.md.

    .venv/bin/python benchmarks/kql_corpus_compile.py [--repeat 5] [--corpus PATH]

The corpus (Elastic's detection-rule queries) is read from ../shared/corpus/
or GATEWATCH_KQL_CORPUS; it is not part of the repository. The one-time build
of the LALR parser is timed separately. Prints one line, ready to paste.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import lark

from gatewatch.kql import compile_query, parse
from gatewatch.kql.fields import compile_path

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "elastic-kql-queries.jsonl"


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--repeat", type=int, default=5, help="runs; the best one is reported")
    arguments.add_argument("--corpus", type=Path, default=Path(os.environ.get("GATEWATCH_KQL_CORPUS") or DEFAULT_CORPUS))
    options = arguments.parse_args()
    if not options.corpus.is_file():
        print(f"KQL corpus not found at {options.corpus} (use --corpus or GATEWATCH_KQL_CORPUS)", file=sys.stderr)
        return 2
    with options.corpus.open(encoding="utf-8") as lines:
        queries = [json.loads(line)["query"] for line in lines if line.strip()]

    started = time.perf_counter()
    parse("a:b")  # builds the LALR parser once
    build_seconds = time.perf_counter() - started

    best = float("inf")
    for _ in range(options.repeat):
        compile_path.cache_clear()  # field paths are cached across queries; start cold each run
        started = time.perf_counter()
        for query in queries:
            compile_query(query)
        best = min(best, time.perf_counter() - started)

    print(
        f"KQL corpus parse+compile: {len(queries)} queries in {best * 1000:.0f} ms "
        f"({best / len(queries) * 1e6:.0f} µs/query, best of {options.repeat}; "
        f"one-time parser build {build_seconds * 1000:.0f} ms; "
        f"Python {platform.python_version()}, lark {lark.__version__}, {platform.machine()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
