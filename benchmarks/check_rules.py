"""`gatewatch check` of 3,000 pods: CPU with 1,000 rules beside CPU with the shipped rules, in one run.

    python benchmarks/check_rules.py [--pods 3000] [--rules 1000] [--runs 3]

The pods: 3,000 Pod manifests in 30 multi-document YAML files, written to a
temporary directory (seed 3000): namespaces default / web / batch / tools,
one to three containers each, images from nginx, redis, postgres, the
company registry's apps and, for one pod in ten, a debug image (busybox,
alpine, netshoot) that the shipped rules flag. The 1,000 rules are
benchmarks/rulesets.py's (the shipped ones, copies bound to other users, 900
bound to unused namespaces), so both runs report the same findings.

Each run is ``gatewatch check --format json --fail-on deny DIR`` in a fresh
process, start-up and rule loading included, as a CI job runs it. Reported:
the CPU time of the process (user + system, from the kernel), median of
``--runs``, for each rule set in alternation; and the ratio. Goal (issue 12):
<= 2x. The outputs must list the same findings.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import report  # noqa: E402  (sibling script)
from rulesets import large_ruleset, ruleset_yaml, shipped_rules  # noqa: E402  (sibling script)

IMAGES = ["nginx:1.27", "redis:7.2", "postgres:16", "registry.example.com/shop/api:2.4.1",
          "registry.example.com/shop/web:2.4.1", "ghcr.io/example/worker:1.0"]
DEBUG_IMAGES = ["busybox:1.36", "alpine:3.20", "nicolaka/netshoot:v0.13"]
NAMESPACES = ["default", "web", "batch", "tools"]
GOAL = 2.0


def write_pods(directory: Path, *, count: int, files: int = 30) -> None:
    rng = random.Random(3000)
    per_file = -(-count // files)
    for number in range(files):
        pods = []
        for index in range(number * per_file, min(count, (number + 1) * per_file)):
            containers = [{"name": f"c{position}", "image": rng.choice(IMAGES),
                           "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
                          for position in range(rng.randint(1, 3))]
            if index % 10 == 0:
                containers[0]["image"] = rng.choice(DEBUG_IMAGES)
            pods.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": f"pod-{index:05d}", "namespace": rng.choice(NAMESPACES),
                                      "labels": {"app": f"app-{index % 40}"}},
                         "spec": {"containers": containers}})
        (directory / f"pods-{number:02d}.yaml").write_text(yaml.dump_all(pods, Dumper=yaml.CSafeDumper))


def check_cpu(rules: Path | None, pods: Path) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, stdout) of one `gatewatch check` process."""
    command = [sys.executable, "-m", "gatewatch", "check", "--format", "json", "--fail-on", "deny", str(pods)]
    if rules is not None:
        command[4:4] = ["--rules", str(rules)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode not in (0, 1):
        raise RuntimeError(f"gatewatch check failed ({finished.returncode}): {finished.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, finished.stdout


def findings(output: str) -> list[tuple[str, str]]:
    """(message, rule id) of each alert line of a --format json output (the shipped rules keep their ids)."""
    return sorted((record["message"], record["rule"]["id"])
                  for record in map(json.loads, filter(str.strip, output.splitlines())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatewatch-check-") as tmp:
        pods = Path(tmp) / "pods"
        pods.mkdir()
        write_pods(pods, count=args.pods)
        rules = Path(tmp) / "rules-large.yaml"
        rules.write_text(ruleset_yaml(large_ruleset(args.rules, never=args.rules * 9 // 10)))
        print(f"load average {os.getloadavg()[0]:.2f}; {args.pods:,} pods in 30 files; "
              f"Python {sys.version.split()[0]}; median of {args.runs} runs each, alternating")
        runs: dict[str, list[tuple[float, float, str]]] = {"shipped": [], "large": []}
        for _ in range(args.runs):
            runs["shipped"].append(check_cpu(None, pods))
            runs["large"].append(check_cpu(rules, pods))
        cpu = {name: statistics.median(run[0] for run in results) for name, results in runs.items()}
        wall = {name: statistics.median(run[1] for run in results) for name, results in runs.items()}
        same = findings(runs["shipped"][0][2]) == findings(runs["large"][0][2])
        count = len(findings(runs["shipped"][0][2]))
        shipped = len(shipped_rules())
        print(f"gatewatch check, {shipped} shipped rules:   {cpu['shipped']:.2f} s CPU ({wall['shipped']:.2f} s wall)")
        print(f"gatewatch check, {args.rules:,} rules:      {cpu['large']:.2f} s CPU ({wall['large']:.2f} s wall)")
        ratio = cpu["large"] / cpu["shipped"]
        print(f"{args.rules:,} rules / {shipped} rules: {ratio:.2f}x CPU ({'meets' if ratio <= GOAL else 'MISSES'} the "
              f"<= {GOAL:.0f}x goal); findings: {count:,} with the shipped rules, "
              + ("the same with both sets" if same else "DIFFERENT between the sets"))
        report(f"check of {args.pods:,} pods, CPU, {args.rules:,} rules", gatewatch=f"{cpu['large']:.2f} s",
               peer=f"{cpu['shipped']:.2f} s, {shipped} shipped rules", ratio=f"{ratio:.2f}",
               goal=f"<= {GOAL:.0f}x", met=ratio <= GOAL and same)
        print(f"  load average {os.getloadavg()[0]:.2f} at the end")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
