"""Issue 9's attacks on the webhook port: what they cost gatewatch, and real reviews meanwhile.

    python benchmarks/webhook_attacks.py [--phase-seconds 10] [--connections 2000]

gatewatch runs as `gatewatch run` starts it (operator, packaged default rules,
warn mode, default server.limits) in a process of its own, against the
Kubernetes API emulator in another (benchmarks/webhook_servers.py); this
process sends the attacks and, at the same time, real Pod CREATE reviews one
after another on fresh TLS connections (as an API server might), and reads
gatewatch's memory from /proc (VmRSS, and VmHWM, the peak).

The phases (the machinery is tests/webhook_attacks.py, which the load test
tests/test_webhook_load.py runs shorter, asserting its bounds):

1. baseline: real reviews only;
2. four POSTs at once of 8 MiB of ``[{},{},...]`` to an unserved path, repeated;
3. the 7.7 MB pods/exec review with a 1.1 million element command, from two
   connections, again and again;
4. an exec review just under the exec size limit, as many command elements as
   fit (about 257,000), from two connections, again and again;
5. 2,000 TLS connections that announce 1 MiB and send half; then the time until
   gatewatch has closed all of them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from webhook_attacks import (  # noqa: E402
    MiB,
    RealReviews,
    Target,
    exec_review,
    forged_exec_body,
    half_bodies,
    repeat,
    unserved_flood,
    while_running,
)


def row(phase: str, attack: str, reviews: RealReviews, target: Target) -> None:
    rss, peak = target.memory()
    print(f"{phase:<34} {attack:<28} {len(reviews.latencies):>5} {len(reviews.failures):>4} "
          f"{reviews.median * 1000:>8.1f} {reviews.worst * 1000:>8.1f} {rss:>7.0f} {peak:>7.0f}", flush=True)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        target = await asyncio.to_thread(Target.start, Path(work))
        try:
            seconds = args.phase_seconds
            print(f"load average before: {os.getloadavg()[0]:.2f}")
            print(f"{'phase':<34} {'attack answers':<28} {'real':>5} {'fail':>4} {'p50 ms':>8} {'max ms':>8} "
                  f"{'RSS MiB':>7} {'peak':>7}")
            reviews = RealReviews()
            await reviews.send(target, count=50)
            row("baseline (real reviews only)", "-", reviews, target)

            async def flood_for(duration: float) -> dict[int, int]:
                deadline = time.monotonic() + duration
                statuses: dict[int, int] = {}
                while time.monotonic() < deadline:
                    for status, count in (await unserved_flood(target, concurrent=4)).statuses.items():
                        statuses[status] = statuses.get(status, 0) + count
                return statuses

            statuses, reviews = await while_running(flood_for(seconds), target)
            row("8 MiB [{},...] to /validate/nothing x4", str(statuses), reviews, target)

            forged = forged_exec_body()
            attack, reviews = await while_running(
                repeat(target, forged, path="/validate/pods-exec", connections=2, seconds=seconds), target)
            row(f"{len(forged) / 1e6:.1f} MB exec, 1.1M elements x2", str(attack.statuses), reviews, target)

            within = json.dumps(exec_review(["curl", *(["-vv"] * (2 * MiB // 7))])).encode()
            attack, reviews = await while_running(
                repeat(target, within, path="/validate/pods-exec", connections=2, seconds=seconds), target)
            row(f"{len(within) / 1e6:.1f} MB exec under the limit x2", str(attack.statuses), reviews, target)

            started = time.monotonic()
            half, reviews = await while_running(
                asyncio.to_thread(half_bodies, target, count=args.connections), target)
            opened_in = time.monotonic() - started
            row(f"{args.connections:,} TLS connections, half a body", f"{half.opened} opened in {opened_in:.0f}s",
                reviews, target)
            while (still_open := await asyncio.to_thread(half.still_open)) and time.monotonic() - started < 300:
                await asyncio.sleep(0.5)
            closed_after = time.monotonic() - started
            half.close()
            print(f"half-body connections still open: {still_open}, {closed_after:.0f}s after the first was opened "
                  f"({closed_after - opened_in:.1f}s after the last)")
            reviews = RealReviews()
            await reviews.send(target, count=50)
            row("after the attacks", "-", reviews, target)
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            await target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-seconds", type=float, default=10.0, help="how long each repeated attack runs")
    parser.add_argument("--connections", type=int, default=2000, help="half-body TLS connections")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
