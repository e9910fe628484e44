"""Admission webhook throughput: gatewatch beside a kopf handler that does nothing, in one run.

    .venv/bin/python benchmarks/webhook_throughput.py [--reviews 6000] [--warmup 1000] [--rounds 3]
                                                      [--concurrency 16] [--mode warn] [--mix matching]
                                                      [--large-rules 1000] [--profile FILE] [--against REV]

Reviews per second and p50/p99 latency over HTTPS keep-alive at concurrency 16,
next to a no-op kopf validating handler, and the servers' resident memory.
Goals (issue 12): gatewatch with the default rules >= 1.0 x the baseline's
reviews per second; with 1,000 rules of which 900 can never match
(``--large-rules``, benchmarks/rulesets.py) >= 0.5 x the default-rules figure
and p99 < 25 ms; resident memory after the run (3 x 7,000 = 21,000 reviews
by default) <= 100 MiB with the default rules, <= 120 MiB with 1,000.

Setup (printed with the result), on 127.0.0.1 only:
- ``baseline``: kopf, one async no-op ``@kopf.on.validate`` for pods and its
  subresources, kopf's HTTPS ``WebhookServer``; ``gatewatch``: the real
  ``controller.Operator`` as `gatewatch run` starts it (default rules, Events
  and alerts queued; alerts to /dev/null); ``gatewatch-large``: the same with
  the generated 1,000 rules (the shipped ones, copies bound to other users, 900
  bound to unused namespaces: each review matches what it matches with the
  default rules); each in a process of its own (benchmarks/webhook_servers.py),
  all with the same cryptography-made certificate;
- their Kubernetes API: one kmock KubernetesEmulator in a fourth process (it
  stores gatewatch's Events; its CPU is printed apart, as "API CPU");
- this process is the load generator: aiohttp, one ``ClientSession`` per server
  with ``TCPConnector(limit=concurrency)``, HTTPS verified against the benchmark CA,
  keep-alive (the TLS connections opened are counted and printed);
- the same pre-encoded AdmissionReviews for both (``--mix matching``, the issue's:
  Pod CREATE busybox, Pod CREATE nginx, pods/exec CONNECT in turn, each with its
  own uid; ``--mix clean``: nginx Pod CREATEs only, nothing matches);
- rounds alternate between the servers (who goes first rotates too), each after
  a warm-up and after every process is idle again, so work one server deferred
  (gatewatch's Event writes) never runs during the other's round. Reported: the
  (lower) median round of each side, the spread over rounds, and the CPU time the
  server process used per review (/proc, until it is idle again, so deferred work
  counts), which a busy shared machine disturbs less than the wall-clock rate.
  The goal's verdict is on the median over rounds of gatewatch / kopf within
  each round (the two ran back to back, so a burst of the machine's other work
  tends to fall on both); the ratio of the median rounds is printed beside it;
- resident memory (VmRSS) of each server once it is ready, and after the last
  round, with the number of reviews it answered in between;
- ``--against REV``: a third server, gatewatch as of that git revision (its
  ``operator/`` from ``git archive``), in the same rotating rounds: a change's
  before and after from one run, each against kopf and against each other.

Everything stays on 127.0.0.1; every loop is bounded in count and by
``--max-seconds``; the servers stop when this script closes their stdin.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import report  # noqa: E402  (sibling script)
from rulesets import large_ruleset, ruleset_yaml  # noqa: E402  (sibling script)
from webhook_reviews import (  # noqa: E402,F401  (sibling script; the other benchmarks import them here)
    MIXES, REVIEW_MIX, PreparedReview, ReviewKind, admission_review, path_for, prepare_reviews,
)
from webhook_servers import archived_operator, write_tls_files  # noqa: E402

ServerName = Literal["baseline", "gatewatch", "gatewatch-large", "gatewatch-before"]
ProcessName = Literal["emulator", "baseline", "gatewatch", "gatewatch-large", "gatewatch-before"]
GOAL_RATIO = 1.0  # gatewatch (default rules) / kopf no-op, reviews/s
LARGE_GOAL_RATIO = 0.5  # gatewatch with 1,000 rules / gatewatch with the default rules
LARGE_GOAL_P99_MS = 25.0
RSS_GOALS_MIB: dict[str, float] = {"gatewatch": 100.0, "gatewatch-large": 120.0}


# --- the servers ------------------------------------------------------------------------------


class ServerProcess:
    """benchmarks/webhook_servers.py in a subprocess; stops when its stdin closes."""

    def __init__(self, name: ProcessName, *, options: list[str], lifetime: float, log_dir: Path,
                 kind: str | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.command = [sys.executable, str(Path(__file__).resolve().parent / "webhook_servers.py"), kind or name,
                        "--lifetime", str(lifetime), *options]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, text=True, env=env)
        self.port: int | None = None

    def wait_ready(self, *, timeout: float) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        # readline() blocks; the server exits (EOF) on failure and by its lifetime at the latest.
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self.port
        raise RuntimeError(f"{self.name} server did not start; its log:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS, Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for {self.name}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self, *, timeout: float = 20.0) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()  # our own child, by its handle
            self.process.wait(timeout=5)
        self._log.close()


# --- the load generator -----------------------------------------------------------------------


@dataclass
class Measurement:
    server: ServerName
    reviews: int
    seconds: float
    latencies: list[float]
    client_cpu_seconds: float
    # From the first request until the server is idle again, so work deferred to
    # queues (Events, alerts) counts too; the emulator's is the API server's work.
    server_cpu_seconds: float = 0.0
    api_cpu_seconds: float = 0.0
    settle_seconds: float = 0.0
    allowed: int = 0
    denied: int = 0
    warned: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.reviews / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def server_cpu_ms_per_review(self) -> float:
        return 1000 * self.server_cpu_seconds / self.reviews


class LoadGenerator:
    """``concurrency`` workers over one keep-alive session; each POSTs the next review."""

    def __init__(self, *, server: ServerName, port: int, ca_file: Path, concurrency: int) -> None:
        self.server = server
        self.base_url = f"https://127.0.0.1:{port}"
        self.concurrency = concurrency
        self.connections_opened = 0
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadGenerator:
        tracing = aiohttp.TraceConfig()

        async def connection_created(*_: object) -> None:
            self.connections_opened += 1

        tracing.on_connection_create_end.append(connection_created)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ssl=self._ssl, keepalive_timeout=300),
            timeout=aiohttp.ClientTimeout(total=30),
            trace_configs=[tracing],
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def run(self, reviews: list[PreparedReview], *, deadline: float) -> Measurement:
        assert self._session is not None
        session = self._session
        queue = iter(reviews)  # shared by the workers; no await between next() calls
        measurement = Measurement(server=self.server, reviews=0, seconds=0.0, latencies=[],
                                  client_cpu_seconds=0.0)
        headers = {"Content-Type": "application/json"}

        async def worker() -> None:
            for review in queue:
                if time.monotonic() > deadline:
                    measurement.errors.append("stopped at --max-seconds")
                    return
                url = self.base_url + path_for(self.server, review.kind)
                started = time.perf_counter()
                try:
                    async with session.post(url, data=review.body, headers=headers) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    measurement.errors.append(f"{review.kind}: {type(error).__name__}: {error}")
                    continue
                measurement.latencies.append(time.perf_counter() - started)
                self._check(review, status, body, measurement)

        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        measurement.seconds = time.perf_counter() - started
        measurement.client_cpu_seconds = time.process_time() - client_before
        measurement.reviews = len(measurement.latencies)
        return measurement

    @staticmethod
    def _check(review: PreparedReview, status: int, body: bytes, measurement: Measurement) -> None:
        """Every answer must be a real AdmissionReview response for this request."""
        if status != 200:
            measurement.errors.append(f"{review.kind}: HTTP {status}: {body[:200]!r}")
            return
        try:
            response = json.loads(body)["response"]
        except (ValueError, KeyError, TypeError):
            measurement.errors.append(f"{review.kind}: not an AdmissionReview: {body[:200]!r}")
            return
        if response.get("uid") != review.uid:
            measurement.errors.append(f"{review.kind}: uid {response.get('uid')!r} is not {review.uid!r}")
        if response.get("allowed"):
            measurement.allowed += 1
            measurement.warned += bool(response.get("warnings"))
        else:
            measurement.denied += 1


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Summary:
    server: ServerName
    rounds: list[Measurement]
    connections_opened: int = 0  # over the whole run: keep-alive means `concurrency` at most
    rss_ready: int = 0  # bytes, before the first request
    rss_after: int = 0  # bytes, after the last round
    reviews_answered: int = 0  # warm-ups included

    def median(self) -> Measurement:
        by_rate = sorted(self.rounds, key=lambda m: m.rate)
        return by_rate[(len(by_rate) - 1) // 2]  # the lower median: conservative for an even count

    def spread(self) -> str:
        rates = [m.rate for m in self.rounds]
        return f"{min(rates):,.0f}..{max(rates):,.0f}/s"


IDLE_CPU_FRACTION = 0.05  # a process below 5% of a core over IDLE_WINDOW is idle
IDLE_WINDOW = 0.5
IDLE_TIMEOUT = 60.0


async def wait_until_idle(processes: list[ServerProcess], *, deadline: float) -> None:
    """Until every process has been idle for one window (bounded by IDLE_TIMEOUT and ``deadline``)."""
    give_up = min(deadline, time.monotonic() + IDLE_TIMEOUT)
    while time.monotonic() < give_up:
        before = [process.cpu_seconds() for process in processes]
        await asyncio.sleep(IDLE_WINDOW)
        used = [process.cpu_seconds() - start for process, start in zip(processes, before)]
        if max(used) <= IDLE_CPU_FRACTION * IDLE_WINDOW:
            return
    print("  (servers still busy; measuring anyway)", file=sys.stderr)


async def benchmark(
    args: argparse.Namespace, *, servers: dict[ServerName, ServerProcess], emulator: ServerProcess, ca_file: Path
) -> dict[ServerName, Summary]:
    deadline = time.monotonic() + args.max_seconds
    results: dict[ServerName, Summary] = {name: Summary(name, []) for name in servers}
    for name, process in servers.items():
        results[name].rss_ready = process.rss_bytes()
    generators = {
        name: LoadGenerator(server=name, port=process.port or 0, ca_file=ca_file, concurrency=args.concurrency)
        for name, process in servers.items()
    }
    for generator in generators.values():
        await generator.__aenter__()
    try:
        index = 1
        for round_number in range(1, args.rounds + 1):
            # Rotate who goes first, so none always runs right after another's burst.
            names = list(servers)
            shift = (round_number - 1) % len(names)
            order: list[ServerName] = names[shift:] + names[:shift]
            for name in order:
                warmup = prepare_reviews(args.warmup, first_index=index, mix=MIXES[args.mix])
                index += args.warmup
                measured = prepare_reviews(args.reviews, first_index=index, mix=MIXES[args.mix])
                index += args.reviews
                warmed = await generators[name].run(warmup, deadline=deadline)
                results[name].reviews_answered += warmed.reviews
                # Work the other server (or the warm-up) deferred must not run during this round.
                await wait_until_idle([*servers.values(), emulator], deadline=deadline)
                server_before, api_before = servers[name].cpu_seconds(), emulator.cpu_seconds()
                measurement = await generators[name].run(measured, deadline=deadline)
                settle_started = time.perf_counter()
                await wait_until_idle([servers[name], emulator], deadline=deadline)
                measurement.settle_seconds = time.perf_counter() - settle_started
                measurement.server_cpu_seconds = servers[name].cpu_seconds() - server_before
                measurement.api_cpu_seconds = emulator.cpu_seconds() - api_before
                results[name].rounds.append(measurement)
                results[name].reviews_answered += measurement.reviews
                print(f"  round {round_number} {name:>9}: {measurement.rate:>7,.0f} reviews/s  "
                      f"p50 {measurement.percentile_ms(0.50):6.2f} ms  p99 {measurement.percentile_ms(0.99):6.2f} ms  "
                      f"server CPU {measurement.server_cpu_ms_per_review:.3f} ms/review  "
                      f"client CPU {measurement.client_cpu_seconds / measurement.seconds:.0%}  "
                      f"API CPU {1000 * measurement.api_cpu_seconds / measurement.reviews:.3f} ms/review  "
                      f"idle after {measurement.settle_seconds:.1f} s  "
                      f"errors {len(measurement.errors)}", file=sys.stderr, flush=True)
                if measurement.errors:
                    print("    first errors: " + "; ".join(measurement.errors[:3]), file=sys.stderr)
                if time.monotonic() > deadline:
                    return results
    finally:
        for name, generator in generators.items():
            results[name].connections_opened = generator.connections_opened
            results[name].rss_after = servers[name].rss_bytes()
            await generator.__aexit__(None, None, None)
    return results


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def result_block(args: argparse.Namespace, results: dict[ServerName, Summary], command: str) -> str:
    medians = {name: summary.median() for name, summary in results.items()}
    baseline, gatewatch = medians["baseline"], medians["gatewatch"]
    ratio = gatewatch.rate / baseline.rate
    cpu_ratio = baseline.server_cpu_ms_per_review / gatewatch.server_cpu_ms_per_review
    lines = [
        "```",
        f"$ {command}",
        f"load average {os.getloadavg()[0]:.2f} at the end (1 min); {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        f"admission webhook throughput: {len(results['baseline'].rounds)} rotating rounds of "
        f"{args.reviews:,} reviews (+{args.warmup:,} warm-up) per server,",
        f"HTTPS keep-alive, concurrency {args.concurrency}, "
        + ("mix 1/3 Pod CREATE busybox, 1/3 Pod CREATE nginx, 1/3 pods/exec CONNECT;" if args.mix == "matching"
           else "Pod CREATE nginx only (no rule matches);"),
        "each server in its own process, load generator (aiohttp) in another, kmock emulator in another; "
        "median round shown",
        "",
        f"{'server':<42} {'reviews/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/review':>21} "
        f"{'rounds reviews/s':>18}",
    ]
    labels = {
        "baseline": "kopf no-op @kopf.on.validate",
        "gatewatch": f"gatewatch ({args.mode}, default rules)",
        "gatewatch-large": f"gatewatch ({args.mode}, {args.large_rules:,} rules)",
        "gatewatch-before": f"gatewatch at {args.against} ({args.mode}, default rules)",
    }
    for name, measurement in medians.items():
        lines.append(
            f"{labels[name]:<42} {measurement.rate:>10,.0f} {measurement.percentile_ms(0.50):>8.2f} "
            f"{measurement.percentile_ms(0.99):>8.2f} {measurement.server_cpu_ms_per_review:>21.3f} "
            f"{results[name].spread():>18}"
        )
    rate_pairs, cpu_pairs = round_ratios(results)
    pair_ratio = statistics.median(rate_pairs)
    lines += [
        "",
        f"gatewatch / kopf no-op, median of the {len(rate_pairs)} rounds' ratios: {pair_ratio:.2f} of reviews/s "
        f"({_verdict(pair_ratio >= GOAL_RATIO)} the >= {GOAL_RATIO} goal), {statistics.median(cpu_pairs):.2f} by server "
        "CPU per review",
        "  each round: " + ", ".join(f"{rate:.2f}/{cpu:.2f}" for rate, cpu in zip(rate_pairs, cpu_pairs))
        + " (reviews/s / server CPU)",
        f"gatewatch / kopf no-op, of the median rounds: {ratio:.2f} of reviews/s; {cpu_ratio:.2f} by server CPU per review",
    ]
    if "gatewatch-before" in results:  # --against: the change's own effect, in the same rounds
        for mine, theirs in (("gatewatch-before", "baseline"), ("gatewatch", "gatewatch-before")):
            rates, cpus = round_ratios(results, server=mine, peer=theirs)  # type: ignore[arg-type]
            lines.append(f"{labels[mine]} / {labels[theirs]}, median of the rounds' ratios: "
                         f"{statistics.median(rates):.2f} of reviews/s, {statistics.median(cpus):.2f} by server CPU")
    if "gatewatch-large" in medians:
        large = medians["gatewatch-large"]
        large_ratio = large.rate / gatewatch.rate
        p99 = large.percentile_ms(0.99)
        lines.append(
            f"{args.large_rules:,} rules / default rules: {large_ratio:.2f} of reviews/s "
            f"({_verdict(large_ratio >= LARGE_GOAL_RATIO)} the >= {LARGE_GOAL_RATIO} goal), "
            f"{gatewatch.server_cpu_ms_per_review / large.server_cpu_ms_per_review:.2f} by server CPU per review; "
            f"p99 {p99:.1f} ms ({_verdict(p99 < LARGE_GOAL_P99_MS)} the < {LARGE_GOAL_P99_MS:.0f} ms goal)")
    for name, summary in results.items():
        goal = RSS_GOALS_MIB.get(name)
        verdict = "" if goal is None else \
            f" ({_verdict(summary.rss_after <= goal * 2**20)} the <= {goal:.0f} MiB goal)"
        lines.append(f"RSS {labels[name]}: {mib(summary.rss_ready)} ready -> {mib(summary.rss_after)} after "
                     f"{summary.reviews_answered:,} reviews{verdict}")
    answers = ", ".join(f"{labels[name]}: {m.allowed:,} allowed ({m.warned:,} with warnings), {m.denied:,} denied"
                        for name, m in medians.items() if name != "baseline")
    lines += [
        f"answers in the median round: {answers}",
        "TLS connections opened in the whole run: "
        + ", ".join(f"{name} {summary.connections_opened}" for name, summary in results.items()),
        "```",
    ]
    return "\n".join(lines)


def round_ratios(results: dict[ServerName, Summary], *, server: ServerName = "gatewatch",
                 peer: ServerName = "baseline") -> tuple[list[float], list[float]]:
    """``server`` / ``peer`` within each round, by reviews/s and by server CPU per review (peer's / server's)."""
    pairs = list(zip(results[peer].rounds, results[server].rounds))
    return ([mine.rate / theirs.rate for theirs, mine in pairs],
            [theirs.server_cpu_ms_per_review / mine.server_cpu_ms_per_review for theirs, mine in pairs])


def report_figures(args: argparse.Namespace, results: dict[ServerName, Summary]) -> None:
    """The issue's webhook and memory figures, for benchmarks/run_all.py's table."""
    medians = {name: summary.median() for name, summary in results.items()}
    baseline, gatewatch = medians["baseline"], medians["gatewatch"]
    ratio = statistics.median(round_ratios(results)[0])  # as result_block's verdict
    report("webhook reviews/s, default rules", gatewatch=f"{gatewatch.rate:,.0f}/s",
           peer=f"{baseline.rate:,.0f}/s kopf no-op", ratio=f"{ratio:.2f}", goal=f">= {GOAL_RATIO}",
           met=ratio >= GOAL_RATIO)
    if "gatewatch-large" in medians:
        large = medians["gatewatch-large"]
        large_ratio, p99 = large.rate / gatewatch.rate, large.percentile_ms(0.99)
        report(f"webhook reviews/s, {args.large_rules:,} rules", gatewatch=f"{large.rate:,.0f}/s",
               peer=f"{gatewatch.rate:,.0f}/s default rules", ratio=f"{large_ratio:.2f}",
               goal=f">= {LARGE_GOAL_RATIO}", met=large_ratio >= LARGE_GOAL_RATIO)
        report(f"webhook p99, {args.large_rules:,} rules", gatewatch=f"{p99:.1f} ms",
               peer=f"{gatewatch.percentile_ms(0.99):.1f} ms default rules",
               ratio=f"{p99 / gatewatch.percentile_ms(0.99):.2f}", goal=f"< {LARGE_GOAL_P99_MS:.0f} ms",
               met=p99 < LARGE_GOAL_P99_MS)
    peer_rss = results["baseline"].rss_after
    for name, label in (("gatewatch", "default rules"), ("gatewatch-large", f"{args.large_rules:,} rules")):
        if name in results:
            summary = results[name]
            goal = RSS_GOALS_MIB[name]
            report(f"RSS, {label}, after {summary.reviews_answered:,} reviews", gatewatch=mib(summary.rss_after),
                   peer=f"{mib(peer_rss)} kopf no-op", ratio=f"{summary.rss_after / peer_rss:.2f}",
                   goal=f"<= {goal:.0f} MiB", met=summary.rss_after <= goal * 2**20)


def _verdict(met: bool) -> str:
    return "meets" if met else "MISSES"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=6000, help="measured reviews per server per round")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up reviews before each measured round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", default="warn", choices=["audit", "warn", "enforce"],
                        help="gatewatch's default mode (enforce denies the exec reviews)")
    parser.add_argument("--mix", default="matching", choices=sorted(MIXES),
                        help="matching: busybox/nginx/exec in turn (2 of 3 match); clean: nginx only")
    parser.add_argument("--large-rules", type=int, default=1000,
                        help="also serve a gatewatch with this many generated rules, 90%% of them bound to unused "
                             "namespaces (benchmarks/rulesets.py); 0: only the default rules")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop measuring after this long")
    parser.add_argument("--against", help="also serve gatewatch as of this git revision, in the same rounds")
    parser.add_argument("--profile-server", default="gatewatch", choices=["gatewatch", "gatewatch-large"],
                        help="which gatewatch --profile profiles")
    parser.add_argument("--profile", type=Path,
                        help="write cProfile stats of gatewatch's event loop (whole run) to this file; "
                             "figures taken with it are slower and not comparable")
    args = parser.parse_args()
    if min(args.reviews, args.rounds, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--reviews, --rounds and --concurrency must be >= 1, --warmup >= 0")
    command = " ".join(["python benchmarks/webhook_throughput.py", shlex.join(sys.argv[1:])]).rstrip()

    with tempfile.TemporaryDirectory(prefix="gatewatch-bench-") as tmp:
        tls_dir = Path(tmp) / "tls"
        write_tls_files(tls_dir)
        names: list[ServerName] = ["baseline", "gatewatch"]
        rules_options: dict[ServerName, list[str]] = {}
        if args.large_rules:
            rules_file = Path(tmp) / "rules-large.yaml"
            rules_file.write_text(ruleset_yaml(large_ruleset(args.large_rules, never=args.large_rules * 9 // 10)))
            names.append("gatewatch-large")
            rules_options["gatewatch-large"] = ["--rules-file", str(rules_file)]
        envs: dict[ServerName, dict[str, str]] = {}
        if args.against:  # the same gatewatch at an earlier revision, in the same rounds
            names.append("gatewatch-before")
            envs["gatewatch-before"] = {**os.environ, "PYTHONPATH": str(archived_operator(args.against, Path(tmp)))}
        lifetime = args.max_seconds + 120
        servers: dict[ServerName, ServerProcess] = {}
        emulator = ServerProcess("emulator", options=[], lifetime=lifetime, log_dir=Path(tmp))
        try:
            api_url = f"http://127.0.0.1:{emulator.wait_ready(timeout=60)}"
            for name in names:
                profile = ["--profile", str(args.profile.resolve())] if args.profile and name == args.profile_server \
                    else []
                kind = "baseline" if name == "baseline" else "gatewatch"
                servers[name] = ServerProcess(
                    name, kind=kind,
                    options=["--tls-dir", str(tls_dir), "--api-url", api_url, "--mode", args.mode, *profile,
                             *rules_options.get(name, [])],
                    lifetime=lifetime, log_dir=Path(tmp), env=envs.get(name))
            for process in servers.values():
                process.wait_ready(timeout=180)
            print("servers ready (" + ", ".join(f"{name} :{process.port}" for name, process in servers.items())
                  + "); measuring...", file=sys.stderr, flush=True)
            results = asyncio.run(benchmark(args, servers=servers, emulator=emulator, ca_file=tls_dir / "ca.crt"))
        finally:
            for process in servers.values():
                process.stop()
            emulator.stop()
        errors = [error for summary in results.values() for m in summary.rounds for error in m.errors]
        for name, process in [*servers.items(), ("emulator", emulator)]:
            tail = process.log_tail() if process.log_path.exists() else ""
            if tail.strip():
                print(f"--- {name} server log (tail) ---\n{tail}", file=sys.stderr)
    if any(not summary.rounds for summary in results.values()):
        print("no complete round: nothing to report", file=sys.stderr)
        return 1
    print(result_block(args, results, command))
    report_figures(args, results)
    if errors:
        print(f"{len(errors)} failed review(s), e.g.: {errors[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
