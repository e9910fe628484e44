"""Replay on one process against ``--workers 2`` (issue #12 item 5): wall and CPU time, the same report.

    python benchmarks/replay_workers.py [--lines 400000] [--rules FILE] [--repeat 2]

The log is benchmarks/audit_log.py's realistic mix, plain and gzip-compressed
(level 1). With the default rules about 2% of its lines match, far more than
in a cluster's own log: every match's document travels from a worker to the
parent, which writes every alert, so that share of the work stays on one
core. ``--rules`` takes a rule file instead of the defaults (one that
matches rarely shows what the workers gain on a quiet log). Each figure is
the best of ``--repeat`` runs, one process and two alternated; wall time is
what two workers are for, so run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_log import audit_lines  # noqa: E402

from gatewatch.decision import Mode  # noqa: E402
from gatewatch.offline import run_replay  # noqa: E402
from gatewatch.rules import load_rules  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay(ruleset, source: Path, workers: int) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process and its workers, the report without alert times)."""
    out, err = io.StringIO(), io.StringIO()
    wall0, cpu0, children0 = time.perf_counter(), time.process_time(), children_cpu()
    run_replay(ruleset, str(source), output_format="json", mode=Mode.ENFORCE, progress=False, out=out, err=err,
               workers=workers)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + children_cpu() - children0
    return wall, cpu, re.sub(r'"@timestamp":"[^"]*",', "", out.getvalue()) + err.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--rules", type=Path, help="a rule file instead of the default rules")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    ruleset = load_rules([args.rules] if args.rules else None)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs; "
          f"Python {sys.version.split()[0]}; rules: {args.rules or 'default'}")
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "audit.jsonl"
        with plain.open("w") as log:
            for line in audit_lines(args.lines):
                log.write(line + "\n")
        packed = Path(tmp) / "audit.jsonl.gz"
        with open(plain, "rb") as source, gzip.open(packed, "wb", compresslevel=1) as target:
            while block := source.read(1 << 20):
                target.write(block)
        print(f"log: {args.lines:,} lines, {plain.stat().st_size / 1e6:.1f} MB ({packed.stat().st_size / 1e6:.1f} MB .gz)")
        for source in (plain, packed):
            runs: dict[int, list[tuple[float, float, str]]] = {1: [], 2: []}
            for _ in range(args.repeat):
                for workers in (1, 2):
                    runs[workers].append(replay(ruleset, source, workers))
            one, two = (min(runs[workers], key=lambda run: run[0]) for workers in (1, 2))
            same = "identical" if one[2] == two[2] else "DIFFERENT"
            print(f"{source.name}: one process {one[0]:.2f} s wall, {one[1]:.2f} s CPU; --workers 2 {two[0]:.2f} s wall, "
                  f"{two[1]:.2f} s CPU (parent and workers); {one[0] / two[0]:.2f}x faster; "
                  f"{one[2].count(chr(10)):,} report lines, {same}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
