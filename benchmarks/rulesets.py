"""Large rule sets for the benchmarks, generated from the shipped rules.yaml (no outside data).

    python benchmarks/rulesets.py [--rules 1000] [--never 900] > rules-1000.yaml

``large_ruleset(1000, never=900)``, the issue's "1,000 rules, of which 900 can
never match", every rule with a distinct id:

- the shipped rules (9 today), unchanged (so the benchmark requests match exactly what
  they match with the default rules: the same alerts and Events);
- copies of them up to the count (91 today), each also bound to one user (``and user.name:"ops-0042"``):
  rules that match the same requests made by other people, as a platform team's
  per-team rules do; the benchmarks' requests come from alice@example.com;
- 900 copies, each bound to a namespace nobody uses
  (``and kubernetes.audit.objectRef.namespace:"team-0042"``).

So matches per request are those of the default rules and only the number of
rules differs: a fair test of how evaluation scales with the rule set.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from gatewatch.rules import default_rules_path


def shipped_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(default_rules_path().read_text(encoding="utf-8"))["rules"]


def _bound(rule: dict[str, Any], *, suffix: str, condition: str, label: str) -> dict[str, Any]:
    copy = dict(rule)
    copy["id"] = f"{rule['id']}-{suffix}"
    copy["name"] = f"{rule['name']} ({label})"
    copy["query"] = f"({rule['query'].strip()})\n  and {condition}\n"
    return copy


def large_ruleset(count: int = 1000, *, never: int = 900) -> list[dict[str, Any]]:
    """``count`` rules: the shipped ones, user-bound copies, and ``never`` namespace-bound copies."""
    shipped = shipped_rules()
    if count < len(shipped) + never:
        raise ValueError(f"{count} rules cannot hold the {len(shipped)} shipped ones and {never} others")
    rules = list(shipped)
    for position in range(count - never - len(shipped)):
        user = f"ops-{position:04d}"
        rules.append(_bound(shipped[position % len(shipped)], suffix=f"user-{position:04d}",
                            condition=f'user.name:"{user}"', label=f"user {user}"))
    for position in range(never):
        namespace = f"team-{position:04d}"
        rules.append(_bound(shipped[position % len(shipped)], suffix=f"ns-{position:04d}",
                            condition=f'kubernetes.audit.objectRef.namespace:"{namespace}"',
                            label=f"namespace {namespace}"))
    return rules


def ruleset_yaml(rules: list[dict[str, Any]], *, name: str = "benchmark") -> str:
    return yaml.dump({"version": 1, "ruleset": name, "rules": rules}, Dumper=yaml.CSafeDumper,
                     sort_keys=False, width=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--never", type=int, default=900, help="how many are bound to a namespace nobody uses")
    args = parser.parse_args()
    sys.stdout.write(ruleset_yaml(large_ruleset(args.rules, never=args.never)))


if __name__ == "__main__":
    main()
