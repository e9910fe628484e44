"""Replay at the parser's floor (issue #12 items 4 and 5): gatewatch's figure and its peer's, in the same run.

    python benchmarks/replay_throughput.py [--lines 100000] [--repeat 3]

1. ``gatewatch replay --format json`` (default rules, enforce mode, one
   process) over a realistic audit log (benchmarks/audit_log.py, 100,000
   lines), end to end in-process: reading, parsing or skimming each line,
   the rule index, documents, rules, new_terms, verdicts, ECS alerts written.
   Figure: events per CPU-second of the process (``time.process_time``).
   Goal: >= 100,000.
2. Its peer, the parse-only floor: ``orjson.loads`` of every line of the same
   log, read the same way. Goal: replay <= 1.5x the floor's CPU time.
3. Both cores: the same log gzip-compressed, replayed with ``--workers 2``
   (wall time and CPU time of this process and its workers) against one
   process, and the two reports compared byte for byte.

Each measurement is the best of ``--repeat`` runs, floor and replay
interleaved (the machine is shared: ratios in one run count, absolute
figures less; wall time only on a quiet machine); each ratio also as the
median of the rounds' own ratios (replay over the floor of its round).
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_log import audit_lines  # noqa: E402

from gatewatch.decision import Mode  # noqa: E402
from gatewatch.offline import run_replay  # noqa: E402
from gatewatch.rules import load_rules  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_floor(path: Path) -> float:
    """CPU seconds to read the log in blocks and orjson.loads every line."""
    begin = time.process_time()
    with open(path, "rb") as log:
        while block := log.read(4 << 20):
            block += log.readline()
            for line in block.split(b"\n"):
                if line:
                    orjson.loads(line)
    return time.process_time() - begin


def replay(path: Path, *, workers: int, output_format: str = "json", every_event: bool = False) -> tuple[float, float, str]:
    """(CPU seconds of this process and its workers, wall seconds, the report)."""
    ruleset = load_rules()
    out, err = io.StringIO(), io.StringIO()
    cpu0, children0, wall0 = time.process_time(), children_cpu(), time.perf_counter()
    run_replay(ruleset, str(path), output_format=output_format, mode=Mode.ENFORCE, progress=False, out=out, err=err,
               workers=workers, every_event=every_event)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + children_cpu() - children0
    # The report without the moment each alert was made.
    report = re.sub(r'"@timestamp":"[^"]*",', "", out.getvalue())
    return cpu, wall, report + err.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with path.open("w") as log:
            for line in audit_lines(args.lines):
                log.write(line + "\n")
        size = path.stat().st_size
        print(f"log: {args.lines:,} lines, {size / 1e6:.1f} MB ({size / args.lines:,.0f} bytes a line)")

        # Interleaved, best of each: the machine's load changes between runs, not within a pair.
        floors, runs, tables, everys = [], [], [], []
        for _ in range(args.repeat):
            floors.append(parse_floor(path))
            runs.append(replay(path, workers=1))
            tables.append(replay(path, workers=1, output_format="table")[0])
            everys.append(replay(path, workers=1, every_event=True)[0])
        floor, cpu, table, every = min(floors), min(run[0] for run in runs), min(tables), min(everys)
        alerts = runs[0][2].count('"kind":"alert"')

        def rounds(times: list[float]) -> str:
            # Each round's replay over the same round's floor: a burst of load elsewhere moves one round, not all.
            return f"median of the rounds' ratios {statistics.median(t / f for t, f in zip(times, floors)):.2f}x"

        print(f"parse-only floor (orjson.loads of every line): {args.lines / floor:,.0f} lines per CPU-second")
        print(f"replay (gatewatch), JSON alerts: {args.lines / cpu:,.0f} events per CPU-second "
              f"({alerts:,} alerts); {cpu / floor:.2f}x the floor's CPU time ({rounds([run[0] for run in runs])})")
        print(f"replay (gatewatch), table: {args.lines / table:,.0f} events per CPU-second; {table / floor:.2f}x the floor "
              f"({rounds(tables)})")
        print(f"replay (gatewatch), every event, JSON alerts: {args.lines / every:,.0f} events per CPU-second; "
              f"{every / floor:.2f}x the floor ({rounds(everys)})")

        packed = Path(tmp) / "audit.jsonl.gz"
        with open(path, "rb") as plain, gzip.open(packed, "wb", compresslevel=6) as gz:
            gz.write(plain.read())
        one = min((replay(packed, workers=1) for _ in range(args.repeat)), key=lambda run: run[1])
        two = min((replay(packed, workers=2) for _ in range(args.repeat)), key=lambda run: run[1])
        same = "identical" if one[2] == two[2] else "DIFFERENT"
        print(f".gz, one process: {one[1]:.2f} s wall, {one[0]:.2f} s CPU; --workers 2: {two[1]:.2f} s wall, "
              f"{two[0]:.2f} s CPU (parent and workers); {one[1] / two[1]:.2f}x faster; reports {same}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
