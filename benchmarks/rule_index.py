"""The rule index with 1,000 rules: candidates per review grow with the rules that could match.

    python benchmarks/rule_index.py

Documents: the webhook benchmark's three reviews (Pod CREATE busybox, Pod CREATE
nginx, pods/exec CONNECT; namespace ``bench``, user alice@example.com) and the
11 events of examples/audit/audit.jsonl. For each, the candidate rules the
index leaves (the rules then evaluated), and the rules that match:

- with the shipped rules, and with benchmarks/rulesets.py's 1,000 (the shipped
  ones, copies bound to other users, 900 bound to unused namespaces);
- beside the peer, an index on objectRef.resource, subresource and verb only,
  as before issue 12 (emulated from the same requirements, so at least as
  precise as it was);
- as the rule set grows by rules that cannot match these documents (bound to
  unused namespaces), and by rules that can (unbound copies of the shipped ones).

And the index's cost, microseconds per document (CPU, best of 5), for both.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import report  # noqa: E402  (sibling script)
from rulesets import large_ruleset, ruleset_yaml, shipped_rules  # noqa: E402  (sibling script)
from webhook_throughput import REVIEW_MIX, admission_review  # noqa: E402  (sibling script)

from gatewatch.documents import document_from_admission_request, document_from_audit_event  # noqa: E402
from gatewatch.kql import And, Exists, MatchAll, Node, Not, Or, parse  # noqa: E402
from gatewatch.prefilter import ABSENT, PRESENT, RuleIndex, requirements  # noqa: E402
from gatewatch.rules import load_rules  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PREVIOUS_FIELDS = ("kubernetes.audit.objectRef.resource", "kubernetes.audit.objectRef.subresource",
                   "kubernetes.audit.verb")


def documents() -> dict[str, dict[str, Any]]:
    now = datetime.now(timezone.utc)
    found = {kind: document_from_admission_request(admission_review(kind, index=1)["request"], now=now)
             for kind in REVIEW_MIX}
    lines = (REPO / "examples" / "audit" / "audit.jsonl").read_text().splitlines()
    for number, line in enumerate(filter(str.strip, lines), start=1):
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        found[f"audit {number}: {event['verb']} {ref.get('resource')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"] = \
            document_from_audit_event(event)
    return found


def previous_index_node(node: Node) -> Node:
    """What an index on resource, subresource and verb alone knows of ``node``."""
    found = requirements(node)
    items: list[Node] = []
    for field in PREVIOUS_FIELDS:
        if field in found:
            atoms = [Exists(field) if atom is PRESENT else Not(Exists(field)) if atom is ABSENT else atom
                     for atom in found[field]]
            items.append(atoms[0] if len(atoms) == 1 else Or(tuple(atoms)))  # type: ignore[arg-type]
    return And(tuple(items)) if items else MatchAll()


def rules_file(rules: list[dict], directory: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(ruleset_yaml(rules))
    return path


def best_us(call: Callable[[], Any], count: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return 1e6 * best / count


def main() -> None:
    import tempfile

    docs = documents()
    print(f"load average {os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        large = load_rules(rules_file(large_ruleset(1000, never=900), Path(tmp), "large"))
    shipped = load_rules()
    small = f"{len(shipped.rules)} shipped"
    sets = {small: shipped.rules, "1,000": large.rules}
    nodes = {name: [rule.matcher.node for rule in rules] for name, rules in sets.items()}
    indexes = {name: RuleIndex(list(range(len(n))), n) for name, n in nodes.items()}
    previous = {name: RuleIndex(list(range(len(n))), [previous_index_node(node) for node in n])
                for name, n in nodes.items()}

    print("\ncandidate rules per document (rules that match in brackets):")
    print(f"{'document':<40} {str(len(shipped.rules)) + ' rules':>9} {'1,000 rules':>12} {'1,000, previous index':>22}")
    per_document: dict[str, tuple[int, int, int]] = {}
    for name, document in docs.items():
        matching = sum(rule.matcher(document) and not rule.is_excepted(document) for rule in large.rules)
        per_document[name] = (len(indexes[small].candidates(document)), len(indexes["1,000"].candidates(document)),
                        len(previous["1,000"].candidates(document)))
        print(f"{name:<40} {per_document[name][0]:>9} {per_document[name][1]:>12} {per_document[name][2]:>22}"
              f"   [{matching}]")

    print("\nas the rule set grows (candidates for the three reviews: busybox, nginx, exec):")
    base = [parse(rule["query"]) for rule in shipped_rules()]
    print(f"{'rules':>7} {'of them could match':>20} {'candidates':>14} {'previous index':>16}")
    growth: dict[tuple[int, int], str] = {}
    for never, could in ((0, 0), (100, 0), (1000, 0), (5000, 0), (0, 50), (0, 500), (5000, 500)):
        grown = base + [And((base[i % len(base)], parse(f'kubernetes.audit.objectRef.namespace:"team-{i}"')))
                        for i in range(never)] + [base[i % len(base)] for i in range(could)]
        index = RuleIndex(list(range(len(grown))), grown)
        old = RuleIndex(list(range(len(grown))), [previous_index_node(node) for node in grown])
        counts = "/".join(str(len(index.candidates(docs[kind]))) for kind in REVIEW_MIX)
        old_counts = "/".join(str(len(old.candidates(docs[kind]))) for kind in REVIEW_MIX)
        print(f"{len(grown):>7} {len(base) + could:>20} {counts:>14} {old_counts:>16}")
        growth[never, could] = counts

    every = list(docs.values()) * 200
    print(f"\nindex cost, microseconds per document (CPU, best of 5 x {len(every):,} documents):")
    for name in sets:
        new_us = best_us(lambda: [indexes[name].candidates(d) for d in every], len(every))
        old_us = best_us(lambda: [previous[name].candidates(d) for d in every], len(every))
        print(f"  {name} rules: {new_us:.1f} us (previous index {old_us:.1f} us)")

    # The goal: candidates grow with the rules that could match, not with the rule count. Rules
    # that cannot match a document add none to it; rules that can add only themselves.
    unchanged = all(small_count == large_count for small_count, large_count, _ in per_document.values())
    unchanged_growth = all(growth[never, 0] == growth[0, 0] for never in (100, 1000, 5000)) \
        and growth[5000, 500] == growth[0, 500]
    reviews = [per_document[kind] for kind in REVIEW_MIX]
    met = unchanged and unchanged_growth
    print(f"\ncandidates per review, 1,000 rules: {'/'.join(str(c[1]) for c in reviews)} "
          f"({small} rules: {'/'.join(str(c[0]) for c in reviews)}; previous index: "
          f"{'/'.join(str(c[2]) for c in reviews)}); rules that cannot match add "
          + ("none on every document: meets the goal" if met else "some: MISSES the goal"))
    report("rule index candidates per review, 1,000 rules", gatewatch="/".join(str(c[1]) for c in reviews),
           peer=f"{'/'.join(str(c[0]) for c in reviews)} with {small}; {'/'.join(str(c[2]) for c in reviews)} "
                "previous index", ratio="-", goal="grow with rules that could match, not the count", met=met)


if __name__ == "__main__":
    main()
