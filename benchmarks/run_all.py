"""Every figure of issue 12's table in one run, each beside its peer, then the table of goals.

    .venv/bin/python benchmarks/run_all.py [--elastic-kql DETECTION_RULES_CHECKOUT] [--out FILE]

Runs, one after another (never two at once: they would measure each other),
each benchmark with bounds that keep the whole run within about fifteen
minutes on two cores:

- webhook_throughput.py: reviews/s of gatewatch with the default rules beside a
  no-op kopf handler, with 1,000 rules (900 of which can never match) beside
  the default rules, p99, and resident memory after 21,000 reviews;
- check_rules.py: `gatewatch check` of 3,000 pods, CPU with 1,000 rules beside
  the shipped rules;
- rule_index.py: candidate rules per review with 1,000 rules;
- rules_load.py: ready to serve with 1,000 rules;
- kql_elastic.py: KQL evaluation beside Elastic's lib/kql (given a checkout of
  elastic/detection-rules with ``--elastic-kql`` or ``$DETECTION_RULES_CHECKOUT`` (the tests' variable);
  without one, gatewatch's figure only and the row says so);
- replay_throughput.py, when it exists: replay beside the parse-only floor.

Each benchmark's own output is shown as it runs; each reports its figures of
the issue's table through benchmarks/figures.py (the replay benchmark's are
read from its output). The load average (``uptime``) is printed before and
after. The last lines are the table: figure, gatewatch, peer, ratio, goal,
met. Exit status 1 when a benchmark failed or a figure is missing, else 0
(goals missed are in the table, not the status).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from figures import ENVIRONMENT  # noqa: E402  (sibling script)


@dataclass(frozen=True)
class Step:
    script: str
    arguments: tuple[str, ...]
    timeout: float  # seconds; the benchmarks bound themselves, this is the backstop
    figures: int  # rows of the table it must report


def steps(elastic_kql: Path | None) -> list[Step]:
    found = [
        # 7 rounds: on a shared 2-core machine one round's ratio to kopf moves by +-0.2, and the verdict on
        # a goal of 1.0 is the median of the rounds' ratios (3 rounds left it to the machine). 7 x 7,000
        # reviews per server: the RSS figure is after 49,000 reviews.
        Step("webhook_throughput.py", ("--reviews", "6000", "--warmup", "1000", "--rounds", "7",
                                       "--max-seconds", "600"), timeout=900, figures=5),
        Step("check_rules.py", ("--runs", "3"), timeout=300, figures=1),
        Step("rule_index.py", (), timeout=120, figures=1),
        Step("rules_load.py", ("--runs", "3"), timeout=300, figures=1),
        Step("kql_elastic.py", ("--repeat", "3", *(("--elastic-kql", str(elastic_kql)) if elastic_kql else ())),
             timeout=300, figures=1 if elastic_kql else 0),
    ]
    if (HERE / "replay_throughput.py").exists():  # issue 12 items 4-5, from the replay branch
        # Best of 3 rounds, floor and replay interleaved: one round's ratio moves by about 0.05.
        found.append(Step("replay_throughput.py", ("--repeat", "3"), timeout=600, figures=2))
    return found


def replay_figures(output: str) -> list[dict]:
    """The replay benchmark's two figures, read from what it prints."""
    floor = re.search(r"parse-only floor \(orjson\.loads of every line\): ([\d,]+) lines per CPU-second", output)
    run = re.search(r"replay \(gatewatch\), JSON alerts: ([\d,]+) events per CPU-second[^;\n]*; "
                    r"([\d.]+)x the floor's CPU time", output)
    if not (floor and run):
        return []
    floor_rate, rate, multiple = (int(floor.group(1).replace(",", "")), int(run.group(1).replace(",", "")),
                                  float(run.group(2)))
    return [
        {"figure": "replay --format json, events/CPU-s", "gatewatch": f"{rate:,}/s",
         "peer": f"{floor_rate:,}/s orjson.loads floor", "ratio": f"{rate / floor_rate:.2f}",
         "goal": ">= 100,000/s", "met": rate >= 100_000},
        {"figure": "replay as a multiple of the parse-only floor", "gatewatch": f"{multiple:.2f}x CPU",
         "peer": "orjson.loads of every line", "ratio": f"{multiple:.2f}", "goal": "<= 1.5x", "met": multiple <= 1.5},
    ]


def load_average() -> str:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return uptime or "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def run_step(step: Step, *, figures_file: Path) -> tuple[int, str]:
    """Run one benchmark, its output passed through; (exit status, its stdout)."""
    command = [sys.executable, str(HERE / step.script), *step.arguments]
    print(f"\n$ python benchmarks/{step.script} {' '.join(step.arguments)}".rstrip(), flush=True)
    environment = {**os.environ, ENVIRONMENT: str(figures_file)}
    started = time.monotonic()
    try:
        finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=environment, timeout=step.timeout)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout if isinstance(expired.stdout, str) else (expired.stdout or b"").decode()
        print(output + f"\n(benchmarks/{step.script} did not finish within {step.timeout:.0f} s)", flush=True)
        return -1, output
    # Without the Markdown fences some benchmarks print for pasting: this output is pasted whole.
    output = "\n".join(line for line in finished.stdout.splitlines() if line.strip() != "```")
    print(output, flush=True)
    print(f"({time.monotonic() - started:.0f} s, exit status {finished.returncode})", flush=True)
    return finished.returncode, output


def table(rows: list[dict]) -> str:
    header = {"figure": "figure", "gatewatch": "gatewatch", "peer": "peer (same run)", "ratio": "ratio",
              "goal": "goal", "met": "met?"}
    cells = [header] + [{**row, "met": "yes" if row["met"] else "NO"} for row in rows]
    widths = {key: max(len(str(cell[key])) for cell in cells) for key in header}
    lines = [" | ".join(f"{str(cell[key]):<{widths[key]}}" for key in header).rstrip() for cell in cells]
    lines.insert(1, "-+-".join("-" * widths[key] for key in header))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elastic-kql", type=Path, default=os.environ.get("DETECTION_RULES_CHECKOUT") or None,
                        help="a checkout of elastic/detection-rules, for the KQL comparison "
                             "(git clone --depth 1 https://github.com/elastic/detection-rules; pip install eql==1.0.1)")
    args = parser.parse_args()

    print(f"before: {load_average()}", flush=True)
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", flush=True)
    started = time.monotonic()
    rows: list[dict] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gatewatch-run-all-") as tmp:
        figures_file = Path(tmp) / "figures.jsonl"
        for step in steps(args.elastic_kql):
            figures_file.write_text("")
            status, output = run_step(step, figures_file=figures_file)
            reported = [json.loads(line) for line in figures_file.read_text().splitlines() if line.strip()]
            if step.script == "replay_throughput.py":
                reported = replay_figures(output)
            rows += reported
            if status != 0 or len(reported) < step.figures:
                failed.append(f"{step.script} (exit status {status}, {len(reported)} of {step.figures} figures)")
    print(f"\nafter: {load_average()}")
    print(f"whole run: {time.monotonic() - started:.0f} s\n")
    if args.elastic_kql is None:
        print("(KQL against Elastic's lib/kql not run: no --elastic-kql checkout given)")
    if not (HERE / "replay_throughput.py").exists():
        print("(replay not run: benchmarks/replay_throughput.py is not in this tree)")
    print(table(rows))
    met = sum(1 for row in rows if row["met"])
    print(f"\n{met} of {len(rows)} goals met in this run")
    if failed:
        print("incomplete: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
