"""Issue 12's figures as the benchmarks report them to benchmarks/run_all.py.

A benchmark prints its figures for people. When ``$GATEWATCH_BENCH_FIGURES``
names a file (run_all.py sets it), each figure of the issue's table is also
appended there as one JSON line: the figure, gatewatch's value, its peer's in
the same run, their ratio, the goal and whether it is met. Values are text with
their units, as printed; ``met`` is decided by the benchmark that measured it.
"""
from __future__ import annotations

import json
import os

ENVIRONMENT = "GATEWATCH_BENCH_FIGURES"


def report(figure: str, *, gatewatch: str, goal: str, met: bool, peer: str = "-", ratio: str = "-") -> None:
    """Append one figure to ``$GATEWATCH_BENCH_FIGURES`` (nothing when it is not set)."""
    path = os.environ.get(ENVIRONMENT)
    if not path:
        return
    record = {"figure": figure, "gatewatch": gatewatch, "peer": peer, "ratio": ratio, "goal": goal, "met": met}
    with open(path, "a", encoding="utf-8") as figures:
        figures.write(json.dumps(record) + "\n")
