"""Rule-engine figures for docs/benchmarks.md.

    python benchmarks/engine_throughput.py [--events 200000]

1. KQL evaluations per second, per default rule, over a mix of audit documents.
2. Replay throughput: events per CPU-second of `gatewatch replay` over a
   synthetic audit log (80% reads, 15% pod creations, 5% exec), all of it:
   read and parse each line, validate it, skip the events no rule can match
   (decided on the raw event's resource, subresource and verb), build the
   document of the others and evaluate the default rules, new_terms in
   event-time order, one verdict per request; with the table summary, and
   with one JSON alert per match (redacted, serialized). Goal: >= 50,000 on
   one core.
3. With ``--packs``: the same replay with the Pod Security packs added
   (``--pack pod-security-baseline --pack pod-security-restricted``), and its
   rate as a ratio of the default rules' in the same run.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gatewatch.decision import Mode
from gatewatch.documents import document_from_audit_event
from gatewatch.offline import run_replay
from gatewatch.rules import RuleSet, load_rules
from gatewatch.rules.packs import PackSelection, load_ruleset

POD_SECURITY_PACKS = (PackSelection("pod-security-baseline"), PackSelection("pod-security-restricted"))

USERS = ["alice", "bob", "system:serviceaccount:ci:deployer", "system:node:node-1", "carol"]
NAMESPACES = ["default", "payments", "web", "kube-system", "monitoring"]
IMAGES = ["nginx:1.27", "busybox:1.36", "registry.example.com/app/api:2.1", "alpine:3.20", "nicolaka/netshoot:v0.13"]


def synthetic_audit_event(rng: random.Random, index: int, start: datetime) -> dict:
    """One realistic audit event; most are reads, as in a real cluster's log."""
    user = rng.choice(USERS)
    namespace = rng.choice(NAMESPACES)
    stamp = (start + timedelta(milliseconds=index * 7)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kind = rng.random()
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Request",
        "auditID": f"00000000-0000-4000-8000-{index:012d}",
        "stage": "ResponseComplete",
        "user": {"username": user, "uid": f"uid-{user}", "groups": ["system:authenticated"]},
        "sourceIPs": [f"10.0.{index % 250}.{index % 200 + 1}"],
        "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/abcdef",
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
        "responseStatus": {"metadata": {}, "code": 200},
    }
    name = f"pod-{index % 1000}"
    if kind < 0.80:  # reads
        resource = rng.choice(["pods", "configmaps", "secrets", "deployments", "leases"])
        verb = rng.choice(["get", "list", "watch"])
        event.update(verb=verb, requestURI=f"/api/v1/namespaces/{namespace}/{resource}")
        event["objectRef"] = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
    elif kind < 0.95:  # pod creations
        image = rng.choice(IMAGES)
        event.update(verb="create", requestURI=f"/api/v1/namespaces/{namespace}/pods", level="RequestResponse")
        event["objectRef"] = {"resource": "pods", "namespace": namespace, "name": name, "apiVersion": "v1"}
        event["requestObject"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "demo"}},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }
        event["responseStatus"]["code"] = 201
    else:  # exec
        event.update(
            verb=rng.choice(["create", "get"]),
            requestURI=f"/api/v1/namespaces/{namespace}/pods/{name}/exec?command=sh&container=main&stdin=true&stdout=true&tty=true",
        )
        event["objectRef"] = {
            "resource": "pods",
            "subresource": "exec",
            "namespace": namespace,
            "name": name,
            "apiVersion": "v1",
        }
        event["responseStatus"]["code"] = 101
    return event


def per_rule_rates(documents: list[dict], repeat: int) -> list[tuple[str, float]]:
    ruleset = load_rules()
    rates = []
    for rule in ruleset.rules:
        matcher = rule.matcher
        begin = time.perf_counter()
        for _ in range(repeat):
            for document in documents:
                matcher(document)
        elapsed = time.perf_counter() - begin
        rates.append((rule.name, repeat * len(documents) / elapsed))
    return rates


def replay_rate(path: Path, events: int, *, output_format: str, ruleset: RuleSet | None = None) -> tuple[float, float]:
    ruleset = ruleset or load_rules()
    out, err = io.StringIO(), io.StringIO()
    begin_cpu, begin_wall = time.process_time(), time.perf_counter()
    run_replay(ruleset, str(path), output_format=output_format, mode=Mode.ENFORCE, progress=False, out=out, err=err)
    cpu, wall = time.process_time() - begin_cpu, time.perf_counter() - begin_wall
    return events / cpu, events / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="synthetic audit events to replay")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--packs", action="store_true", help="also replay with the Pod Security packs")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sample = [document_from_audit_event(synthetic_audit_event(rng, i, start)) for i in range(2_000)]
    print("KQL evaluations per second, per default rule (2,000 mixed audit documents x 20):")
    for name, rate in per_rule_rates(sample, repeat=20):
        print(f"  {rate:>12,.0f}/s  {name}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with path.open("w") as log:
            for i in range(args.events):
                log.write(json.dumps(synthetic_audit_event(rng, i, start)) + "\n")
        rates = {}
        for output_format in ("table", "json"):
            per_cpu, per_wall = replay_rate(path, args.events, output_format=output_format)
            rates[output_format] = per_cpu
            print(
                f"replay --format {output_format}: {args.events:,} events, "
                f"{per_cpu:,.0f} events per CPU-second ({per_wall:,.0f}/s wall)"
            )
        if args.packs:
            with_packs = load_ruleset(packs=POD_SECURITY_PACKS)
            per_cpu, per_wall = replay_rate(path, args.events, output_format="table", ruleset=with_packs)
            print(
                f"replay --format table --pack pod-security-baseline --pack pod-security-restricted: "
                f"{per_cpu:,.0f} events per CPU-second ({per_wall:,.0f}/s wall), "
                f"{per_cpu / rates['table']:.2f} of the default rules' rate"
            )


if __name__ == "__main__":
    main()
