"""ES|QL, the part a per-event detection rule uses: parse, compile, evaluate over
gatewatch documents (the same document view the KQL rules read).

    >>> from gatewatch.esql import compile_esql
    >>> matches = compile_esql('FROM logs-* | WHERE kubernetes.audit.verb == "create"')
    >>> matches({"kubernetes": {"audit": {"verb": "create"}}})
    True

``parse`` gives the syntax tree (``gatewatch.esql.ast``), ``compile_esql`` a
``CompiledEsql`` (document -> bool), ``execute`` runs a whole query, STATS
included, over a set of documents. The modules, along the data flow:
``parser`` (grammar ``esql.lark``) -> ``compiler`` (commands, expressions) with
``names`` (which column a name is), ``values`` (types, nulls, multi-values,
arithmetic), ``functions``, ``lucene`` (RLIKE, LIKE), ``javaregex`` (REPLACE),
``regex`` (RE2, else ``re``), ``grok`` and ``dissect``; ``requirement`` (a KQL
tree for the rule index); ``aggregate`` (STATS) and ``schedule`` (STATS on
Elastic's schedule, for replay).

Where gatewatch's evaluation deviates from Elasticsearch's (each is deliberate):

- field types come from the JSON document, not an index mapping, except the
  date and IP fields of Elastic's Kubernetes mapping (``values.DATE_FIELDS``,
  ``values.IP_FIELDS``); fields Elastic does not map (``requestObject`` below
  its few mapped paths, which Elastic's rules therefore read through KQL())
  are readable here; a comparison between different types is null instead of
  a verification error;
- keyword multi-values keep the document's order and duplicates (Elasticsearch
  sorts and de-duplicates them), which only MV_FIRST/MV_LAST/MV_SLICE show;
- COUNT_DISTINCT is exact; ES|QL warnings are not collected;
- per event, LIMIT n keeps n rows of that event (so only LIMIT 0 changes a
  match) and SORT orders that event's rows; NOW() is the event's @timestamp;
- RLIKE, LIKE and REPLACE patterns Python's ``re`` cannot express are refused
  when the rule loads (``regex``); GROK runs the standard pattern library with
  Python's ``re`` (``grok``).
"""
from gatewatch.esql.aggregate import execute
from gatewatch.esql.compiler import CompiledEsql, compile_esql
from gatewatch.esql.parser import parse

__all__ = ["CompiledEsql", "compile_esql", "execute", "parse"]
