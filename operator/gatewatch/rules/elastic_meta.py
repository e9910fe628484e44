"""What gatewatch keeps of itself in an exported Elastic rule, so that
``export-elastic`` then ``import-elastic`` gives the same rules back.

Elastic has no place for a rule's action (alert/warn/deny), its exceptions
as KQL, or an id that is not a UUID (detection-rules requires UUIDs). The
export says what Elastic should run, and keeps gatewatch's own view in the
rule's free-form ``meta`` object (Kibana keeps it; detection-rules' TOML
schema allows it) under ``meta.gatewatch``:

- ``rule_id``: the gatewatch id, when it is not a UUID; Elastic's ``rule_id``
  is then ``uuid5(RULE_ID_NAMESPACE, id)``, the same on every export;
- ``action``: the rule's action;
- ``query``: the rule's query as written, when Elastic's differs (a KQL
  query is exported as KQL rendered from its parsed tree, with any exceptions
  folded in: ``(query) and not (exception)``, so Elastic alerts exactly where
  gatewatch does);
- ``exceptions``: the rule's exceptions as written;
- ``enabled``: false for a disabled rule.

The import trusts ``meta.gatewatch`` only where it agrees with the rule:
an Elastic ``rule_id`` or query changed in Kibana wins, with a warning.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewatch.errors import KqlSyntaxError
from gatewatch.kql import parse, to_kql
from gatewatch.kql.ast import And, Node, Not

META_KEY = "gatewatch"
# Fixed for all time: exported ids must not change between gatewatch versions.
RULE_ID_NAMESPACE = uuid.UUID("5f1c8b0e-6a55-5d6b-9d2e-3f8e0c6f2a61")
# detection-rules' UUIDString: lowercase, hyphenated
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def elastic_rule_id(rule_id: str) -> str:
    """The ``rule_id`` Elastic gets: the id itself when it is a UUID, else a UUID derived from it."""
    return rule_id if _UUID.match(rule_id) else str(uuid.uuid5(RULE_ID_NAMESPACE, rule_id))


def elastic_query(query: str, exceptions: Sequence[str]) -> str:
    """The KQL Elastic runs for a gatewatch KQL rule: ``(query) and not (exception) ...``,
    rendered from the parsed trees (so it is the plain KQL Elastic's grammar reads)."""
    return to_kql(_tree(query, exceptions))


def _tree(query: str, exceptions: Sequence[str]) -> Node:
    if not exceptions:
        return parse(query)
    return And((parse(query), *(Not(parse(exception)) for exception in exceptions)))


def meta_for(
    *, rule_id: str, action: str, query: str, exceptions: Sequence[str], exported_query: str, enabled: bool
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if elastic_rule_id(rule_id) != rule_id:
        meta["rule_id"] = rule_id
    meta["action"] = action
    if exceptions:
        meta["exceptions"] = list(exceptions)
    if exported_query != query:
        meta["query"] = query
    if not enabled:
        meta["enabled"] = False
    return {META_KEY: meta}


@dataclass
class Restored:
    """What an import takes back from ``meta.gatewatch``."""

    rule_id: str | None = None
    action: str | None = None
    query: str | None = None
    exceptions: list[str] = field(default_factory=list)
    enabled: bool | None = None
    warnings: list[str] = field(default_factory=list)


def restore(rule: Mapping[str, Any], *, query: str) -> Restored:
    """Read ``meta.gatewatch`` of an Elastic rule table whose (Elastic) query is ``query``."""
    restored = Restored()
    meta = rule.get("meta")
    own = meta.get(META_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(own, Mapping):
        return restored
    elastic_id = rule.get("rule_id")
    if isinstance(own.get("rule_id"), str):
        if elastic_rule_id(own["rule_id"]) == elastic_id:
            restored.rule_id = own["rule_id"]
        else:
            restored.warnings.append(
                f"meta.gatewatch.rule_id {own['rule_id']!r} does not give rule_id {elastic_id!r} (changed in Elastic?): "
                "Elastic's rule_id kept"
            )
    if own.get("action") in ("alert", "warn", "deny"):
        restored.action = own["action"]
    if own.get("enabled") is False:
        restored.enabled = False
    exceptions = own.get("exceptions")
    exceptions = list(exceptions) if isinstance(exceptions, list) and all(isinstance(e, str) for e in exceptions) else []
    original = own.get("query")
    if isinstance(original, str):
        if _same_query(query, original, exceptions):
            restored.query, restored.exceptions = original, exceptions
        else:
            restored.warnings.append(
                "the query differs from meta.gatewatch's query"
                + (" with its exceptions folded in" if exceptions else "")
                + " (changed in Elastic?): imported as Elastic has it"
            )
    else:  # the query is the rule's own: exceptions were not folded (an EQL rule's)
        restored.exceptions = exceptions
    return restored


def _same_query(elastic: str, original: str, exceptions: Sequence[str]) -> bool:
    try:
        return parse(elastic) == parse(elastic_query(original, exceptions))
    except KqlSyntaxError:
        return False
