"""Names the docs mention, and the names the code emits or accepts (tests/test_docs_names.py).

The docs (README.md, docs/*.md, the chart's README.md and its NOTES.txt as
rendered) are read for names of these kinds, each checked against its source
of truth in code:

| kind | found in the docs as | checked against |
| --- | --- | --- |
| metric | `gatewatch_[a-z_]+` anywhere | the Prometheus registry of gatewatch.metrics (counters only with `_total`) |
| metric labels and values | `metric{label="value"}`, `metric{a,b}`, the metrics table | the registry's label names, metrics.LABEL_VALUES |
| Event reason | `reason=X`, CamelCase words in backticks on a line saying reason/Event, or in a reasons table | events.EVENT_REASONS |
| annotation / label key | `gatewatch.io/<key>` anywhere | events.EVENT_ANNOTATIONS and every `gatewatch.io/...` string of the package |
| CLI flag | `--flag` (and literal choice values) in `gatewatch <command> ...` lines | click's command tree |
| chart value / config key | `--set a.b=...` in helm commands; `a.b.c` in backticks; the chart README's Key table | values.schema.json (--set, Key table), or it and the config model |
| environment variable | `GATEWATCH_[A-Z_]+` | config.ENVIRONMENT_KEYS |

The patterns are the naming conventions, not lists: a name another change adds
is found the same way.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import helm_python
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gatewatch.cli import main as cli_main
from gatewatch.config import CONFIG_FILE_VARIABLE, ENVIRONMENT_KEYS, Settings
from gatewatch.kube.events import (
    EVENT_ANNOTATIONS,
    EVENT_REASONS,
    ObjectRef,
    _REASONS,
    match_event,
    rules_rejected_event,
)
from gatewatch.metrics import LABEL_VALUES, Metrics
from gatewatch.rules.model import Action, Rule, RuleType, Severity

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "operator" / "gatewatch"
CHART_DIR = REPO_ROOT / "charts" / "gatewatch"
DOCS_DIR = REPO_ROOT / "docs"
MARKDOWN_FILES = sorted([REPO_ROOT / "README.md", CHART_DIR / "README.md", *DOCS_DIR.glob("*.md")])


# --- what the code emits or accepts ---------------------------------------------------------


@dataclass(frozen=True)
class MetricFacts:
    family: str
    kind: str  # counter, gauge, histogram
    labels: frozenset[str]

    @property
    def exposed_names(self) -> frozenset[str]:
        """The sample names a query may use."""
        if self.kind == "counter":
            return frozenset({self.family + "_total"})
        if self.kind == "histogram":
            return frozenset({self.family + suffix for suffix in ("", "_bucket", "_sum", "_count")})
        return frozenset({self.family})


def emitted_metrics() -> dict[str, MetricFacts]:
    """Every metric of a fresh Metrics(), by each name it is queried with."""
    metrics = Metrics()
    found: dict[str, MetricFacts] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (family,) = metric.describe()
        # prometheus_client keeps the label names on the wrapper only (no public accessor).
        facts = MetricFacts(family=family.name, kind=family.type, labels=frozenset(metric._labelnames))
        for name in facts.exposed_names:
            found[name] = facts
    assert found, "no metrics found on Metrics()"
    return found


def exported_label_values() -> dict[str, set[str]]:
    """Label values a fresh registry already exports (the pre-initialized bounded labels)."""
    values: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    return values


def _rule() -> Rule:
    return Rule(id="r1", name="Rule", description="d", severity=Severity.LOW, risk_score=21,
                type=RuleType.QUERY, query="x:1", matcher=lambda document: True, action=Action.DENY)


_AT = datetime(2026, 11, 22, tzinfo=timezone.utc)  # when the sample Events happened: any time will do


def emitted_event_reasons_and_annotations() -> tuple[set[str], set[str]]:
    """Reasons and annotation keys of the Events gatewatch really builds, for every operation and effect."""
    reasons: set[str] = set()
    annotations: set[str] = set()
    operations = {operation for operation, _ in _REASONS}
    for operation in operations:
        for effect in Action:
            request = match_event(rule=_rule(), effect=effect, operation=operation, namespace="n",
                                  pod_name="p", user="u", observed_at=_AT)
            for event in (request, request.combined()):
                reasons.add(event.reason)
                annotations |= set(event.annotations)
    rejected = rules_rejected_event(configmap=ObjectRef(kind="ConfigMap", api_version="v1", name="r", namespace="n"),
                                    error=ValueError("bad"), observed_at=_AT)
    reasons.add(rejected.reason)
    annotations |= set(rejected.annotations)
    return reasons, annotations


ANNOTATION_KEY = re.compile(r"gatewatch\.io/[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")


def known_annotation_keys() -> set[str]:
    """Event annotations, plus every `gatewatch.io/...` key the package spells out as a string."""
    keys = set(EVENT_ANNOTATIONS)
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ANNOTATION_KEY.fullmatch(node.value):
                keys.add(node.value)
    return keys


def cli_commands() -> dict[str, click.Command]:
    """`gatewatch <words>` -> the click command, for every command of the tree."""
    commands: dict[str, click.Command] = {}

    def walk(command: click.Command, words: tuple[str, ...]) -> None:
        commands[" ".join(words)] = command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*words, name))

    walk(cli_main, ("gatewatch",))
    return commands


def options_of(command: click.Command) -> dict[str, click.Parameter]:
    options = {}
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    return options


def chart_schema() -> dict[str, Any]:
    return json.loads((CHART_DIR / "values.schema.json").read_text())


def config_schema() -> dict[str, Any]:
    return Settings.model_json_schema(by_alias=True)


def schema_has_path(schema: Mapping[str, Any], path: list[str]) -> bool:
    """Whether ``a.b.c`` is a key path the JSON schema allows (a map allows any key below it)."""

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            *_, section, name = node["$ref"].split("/")
            node = schema[section][name]
        for union in ("anyOf", "oneOf", "allOf"):
            for option in node.get(union, ()):
                option = resolve(option)
                if option.get("type") != "null":
                    return option
        return node

    node = resolve(schema)
    for segment in path:
        properties = node.get("properties", {})
        if segment in properties:
            node = resolve(properties[segment])
            continue
        patterns = node.get("patternProperties", {})
        matching = [sub for pattern, sub in patterns.items() if re.search(pattern, segment)]
        if matching:
            node = resolve(matching[0])
        elif isinstance(node.get("additionalProperties"), dict):
            node = resolve(node["additionalProperties"])
        elif node.get("additionalProperties") is True or (
                node.get("type") == "object" and not properties and not patterns
                and node.get("additionalProperties") is not False):
            return True  # a free-form map: any key below
        else:
            return False
    return True


# --- what the docs mention ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    where: str
    text: str


def rendered_notes(values: dict[str, Any] | None) -> str:
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name="gatewatch", namespace="gatewatch", is_install=True)
    return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))


def doc_sources() -> list[Source]:
    sources = [Source(str(path.relative_to(REPO_ROOT)), path.read_text()) for path in MARKDOWN_FILES]
    production = yaml.safe_load((CHART_DIR / "examples" / "enforce-production.yaml").read_text())
    for name, values in (("default", None), ("mode enforce", {"mode": "enforce"}),
                         ("mode audit", {"mode": "audit"}), ("enforce-production", production)):
        sources.append(Source(f"NOTES.txt ({name})", rendered_notes(values)))
    return sources


@dataclass(frozen=True)
class Mention:
    where: str  # file:line
    name: str
    context: str = ""


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def backtick_spans(text: str) -> Iterator[tuple[int, str]]:
    """Inline code spans (may wrap onto the next line) and each line of fenced code blocks."""
    in_fence = False
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif in_fence:
            yield offset, line.rstrip("\n")
        offset += len(line)
    prose = re.sub(r"^\s*```.*?^\s*```", lambda m: " " * len(m.group(0)), text, flags=re.S | re.M)
    for match in re.finditer(r"`([^`]+)`", prose):
        yield match.start(1), match.group(1)


METRIC_NAME = re.compile(r"\bgatewatch_[a-z0-9_]*[a-z0-9]\b")
METRIC_SELECTOR = re.compile(r"\b(gatewatch_[a-z0-9_]*[a-z0-9])\{([^}]*)\}")
LABEL_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$')


def metric_problems(source: Source, metrics: Mapping[str, MetricFacts]) -> list[str]:
    problems = []
    text = source.text
    for match in METRIC_NAME.finditer(text):
        where = f"{source.where}:{_line_of(text, match.start())}"
        name = match.group(0)
        if name not in metrics:
            family = next((facts for facts in metrics.values() if facts.family == name), None)
            hint = f" (a counter: query {name}_total)" if family and family.kind == "counter" else ""
            problems.append(f"{where}: metric {name} is not emitted{hint}")
    for match in METRIC_SELECTOR.finditer(text):
        where = f"{source.where}:{_line_of(text, match.start())}"
        name, inside = match.groups()
        # A counter named without _total is reported above; its labels are still checked.
        facts = metrics.get(name) or next((f for f in metrics.values() if f.family == name), None)
        if facts is None or not inside.strip():
            continue
        parts = [part for part in inside.split(",") if part.strip()]
        if all(re.fullmatch(r"\s*[a-z_]+\s*", part) for part in parts):
            # `metric{a,b}`: the metric's label names, all of them.
            named = {part.strip() for part in parts}
            if named != set(facts.labels):
                problems.append(f"{where}: {name} has labels {sorted(facts.labels)}, the docs say {sorted(named)}")
            continue
        for part in parts:
            matcher = LABEL_MATCHER.match(part)
            if not matcher:
                problems.append(f"{where}: cannot read the label matcher {part!r} of {name}")
                continue
            label, operator, value = matcher.groups()
            if label not in facts.labels:
                problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(facts.labels)})")
            elif operator in ("=", "!=") and label in LABEL_VALUES and value not in LABEL_VALUES[label]:
                problems.append(f"{where}: {name}{{{label}={value!r}}}: {label} is one of "
                                f"{sorted(LABEL_VALUES[label])}")
    # The metrics table: backticked words in a row are the metric's label names or their values.
    for number, line in enumerate(text.splitlines(), start=1):
        row = re.match(r"^\|\s*`(gatewatch_[a-z0-9_]+)(?:\{[^}]*\})?`\s*\|(.*)\|\s*$", line)
        if not row or row.group(1) not in metrics:
            continue
        facts = metrics[row.group(1)]
        allowed = set(facts.labels) | {v for label in facts.labels for v in LABEL_VALUES.get(label, ())}
        for word in re.findall(r"`([a-z][a-z-]*)`", row.group(2)):
            if word not in allowed and any(label in LABEL_VALUES for label in facts.labels):
                problems.append(f"{source.where}:{number}: {row.group(1)}: {word!r} is none of its labels "
                                f"or their values {sorted(allowed)}")
    return problems


CAMEL_WORD = re.compile(r"`([A-Z][a-z]+(?:[A-Z][a-z]+)+)`")
REASON_SELECTOR = re.compile(r"\breason=([A-Za-z]+)")


def reason_mentions(source: Source) -> list[Mention]:
    """`reason=X`; CamelCase words in backticks on a line that says reason or Event, or in a table
    whose header says reason."""
    mentions = []
    table_is_reasons = False
    for number, line in enumerate(source.text.splitlines(), start=1):
        where = f"{source.where}:{number}"
        if line.startswith("|"):
            if re.match(r"^\|\s*reason\s*\|", line, flags=re.I):
                table_is_reasons = True
        else:
            table_is_reasons = False
        mentions += [Mention(where, word) for word in REASON_SELECTOR.findall(line)]
        if table_is_reasons or re.search(r"\breasons?\b|\bEvents?\b", line, flags=re.I):
            mentions += [Mention(where, word, line) for word in CAMEL_WORD.findall(line)]
    return mentions


# CamelCase words the docs put next to "Event" that are Kubernetes' own names (kinds, other
# controllers' Event reasons such as the ReplicaSet controller's FailedCreate), not gatewatch's reasons.
NOT_REASONS = frozenset({"FailedCreate", "ConfigMap", "AdmissionReview", "ValidatingWebhookConfiguration", "EventAggregator",
                         "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ValidatingAdmissionPolicy"})


def reason_problems(source: Source) -> list[str]:
    return [f"{mention.where}: Event reason {mention.name} is not one gatewatch gives ({sorted(EVENT_REASONS)})"
            for mention in reason_mentions(source)
            if mention.name not in EVENT_REASONS and mention.name not in NOT_REASONS]


def annotation_problems(source: Source, known: set[str]) -> list[str]:
    return [f"{source.where}:{_line_of(source.text, match.start())}: {match.group(0)} is no key gatewatch "
            f"writes or reads" for match in ANNOTATION_KEY.finditer(source.text) if match.group(0) not in known]


def _without_comment(line: str) -> str:
    return re.sub(r"\s#\s.*$", "", line)


def gatewatch_command_lines(source: Source) -> Iterator[tuple[str, str]]:
    """(where, command line) for each `gatewatch ...` invocation, continuation lines joined."""
    for offset, span in backtick_spans(source.text):
        where = f"{source.where}:{_line_of(source.text, offset)}"
        yield where, " ".join(span.split())
    # Fenced blocks: join `\` continuations and indented `[--flag]` synopsis lines.
    lines = source.text.splitlines()
    for number, line in enumerate(lines):
        if not re.match(r"^\s*(?:\$\s+)?gatewatch\s", line):
            continue
        joined = _without_comment(line)
        follow = number + 1
        while follow < len(lines) and (joined.rstrip().endswith("\\") or re.match(r"^\s+[\[-]", lines[follow])):
            joined = joined.rstrip().rstrip("\\") + " " + _without_comment(lines[follow]).strip()
            follow += 1
        yield f"{source.where}:{number + 1}", " ".join(joined.split())


def flag_mentions(source: Source) -> Iterator[tuple[str, str, str, list[str]]]:
    """(where, command words, flag, the words after it) for each flag of a `gatewatch` command."""
    commands = cli_commands()
    for where, line in gatewatch_command_lines(source):
        # `gatewatch` as the command (not a Helm release or chart named gatewatch).
        for start in re.finditer(r"(?:^|[;&|(]\s*|\$\s+|\bbin/)gatewatch((?:\s+[a-z][a-z-]*)*)(?=\s|$)", line):
            words = ["gatewatch"]
            for word in start.group(1).split():
                if " ".join([*words, word]) in commands:
                    words.append(word)
                else:
                    break
            command_words = " ".join(words)
            rest = line[start.end(0):]
            rest = re.split(r"\s(?:\||&&|;|#)\s|`", rest)[0]  # up to the next shell command or comment
            tokens = rest.replace("[", " ").replace("]", " ").split()
            for index, token in enumerate(tokens):
                # `--progress|--no-progress`: both are flags; `--format table|json`: one flag, two values.
                for flag in re.findall(r"(?:^|\|)(--?[a-zA-Z][a-zA-Z0-9-]*)", token):
                    yield where, command_words, flag, tokens[index + 1: index + 2]


def flag_problems(source: Source) -> list[str]:
    problems = []
    commands = cli_commands()
    for where, command_words, flag, after in flag_mentions(source):
        options = options_of(commands[command_words])
        if flag not in options:
            problems.append(f"{where}: `{command_words}` has no option {flag} (it has {sorted(options)})")
            continue
        param = options[flag]
        value = after[0] if after and not param.is_flag else None
        if value and isinstance(param.type, click.Choice) and not re.search(r"[A-Z<>.]", value):
            # A literal value (not a placeholder such as MODE or <mode>): each alternative must be a choice.
            for choice in value.split("|"):
                if choice not in param.type.choices:
                    problems.append(f"{where}: `{command_words} {flag}` takes {list(param.type.choices)}, "
                                    f"not {choice!r}")
    return problems


SET_FLAG = re.compile(r"--set(?:-string|-file|-json)?[ =]([^\s=]+)=")
VALUE_PATH = re.compile(r"^([a-z][A-Za-z0-9]*(?:\.[a-zA-Z][A-Za-z0-9]*)+)(?=$|[\s:=\[/])")
NOT_A_VALUE_PATH = re.compile(r"\.(?:io|com|org|yaml|yml|json|md|txt|toml|tpl|gz|py|crt|key|pem|local|svc)\b")


def value_path_problems(source: Source, *, chart: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    problems = []
    text = source.text
    for number, line in enumerate(text.splitlines(), start=1):
        if "helm " not in line and not line.lstrip().startswith("--set"):
            continue
        for key in SET_FLAG.findall(line):
            # Helm's `\.` (written `\\.` in a shell line) is a dot inside a key.
            path = [segment.replace("\\", "") for segment in re.split(r"(?<!\\)\.", key)]
            if not schema_has_path(chart, path):
                problems.append(f"{source.where}:{number}: --set {key}: no such chart value (values.schema.json)")
    top_level = set(chart["properties"]) | set(config["properties"])
    for offset, span in backtick_spans(text):
        match = VALUE_PATH.match(span.strip())
        if not match or NOT_A_VALUE_PATH.search(match.group(1)):
            continue
        path = match.group(1).split(".")
        if path[0] not in top_level:
            continue  # an alert field (gatewatch.mode), a document field (kubernetes.audit...), ...
        if not (schema_has_path(chart, path) or schema_has_path(config, path)):
            problems.append(f"{source.where}:{_line_of(text, offset)}: {match.group(1)} is neither a chart value "
                            f"(values.schema.json) nor a config key (gatewatch.config.Settings)")
    return problems


ENVIRONMENT_VARIABLE = re.compile(r"\bGATEWATCH_[A-Z0-9_]*[A-Z0-9]\b")


def environment_problems(source: Source) -> list[str]:
    known = set(ENVIRONMENT_KEYS) | {CONFIG_FILE_VARIABLE}
    return [f"{source.where}:{_line_of(source.text, match.start())}: {match.group(0)} is not read by gatewatch"
            for match in ENVIRONMENT_VARIABLE.finditer(source.text) if match.group(0) not in known]


@dataclass
class Checker:
    metrics: dict[str, MetricFacts] = field(default_factory=emitted_metrics)
    annotation_keys: set[str] = field(default_factory=known_annotation_keys)
    chart: dict[str, Any] = field(default_factory=chart_schema)
    config: dict[str, Any] = field(default_factory=config_schema)

    def problems(self, source: Source) -> list[str]:
        return [
            *metric_problems(source, self.metrics),
            *reason_problems(source),
            *annotation_problems(source, self.annotation_keys),
            *flag_problems(source),
            *value_path_problems(source, chart=self.chart, config=self.config),
            *environment_problems(source),
        ]


# --- the chart's values table (charts/gatewatch/README.md) ----------------------------------


def documented_chart_keys() -> dict[str, int]:
    """Key paths of the chart README's "| Key | Default | Description |" table, with their line.

    A row names one path and siblings of its last segment (`a.b.c` / `.d`, `a.b` / `c`) or,
    for top-level keys, more top-level keys (`nodeSelector`, `tolerations`).
    """
    keys: dict[str, int] = {}
    in_table = False
    for number, line in enumerate((CHART_DIR / "README.md").read_text().splitlines(), start=1):
        if re.match(r"^\|\s*Key\s*\|", line):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("| ---"):
            continue
        items = re.findall(r"`([^`]+)`", line.split("|")[1])
        first = items[0].split(".")
        keys[".".join(first)] = number
        for item in items[1:]:
            sibling = first[:-1] + [item.lstrip(".")] if (item.startswith(".") or len(first) > 1) else [item]
            keys[".".join(sibling)] = number
    return keys


def chart_value_leaves(schema: Mapping[str, Any]) -> Iterator[str]:
    def walk(node: Mapping[str, Any], prefix: list[str]) -> Iterator[str]:
        while "$ref" in node:
            *_, section, name = node["$ref"].split("/")
            node = schema[section][name]
        if node.get("type") == "object" and node.get("properties"):
            for key, sub in node["properties"].items():
                yield from walk(sub, [*prefix, key])
        else:
            yield ".".join(prefix)

    yield from walk(schema, [])
