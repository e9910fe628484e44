"""Every name the docs give is one the code emits or accepts, and the other way round.

What is read and against what: tests/docs_names.py. Here: the docs against the
code, an invented name of each kind caught, the code's tables against what the
code does, and everything the code emits or accepts documented (operations.md,
configuration.md, README.md, the chart's README.md).
"""
from __future__ import annotations

import re

import click
import pytest

from docs_names import (
    ANNOTATION_KEY,
    ENVIRONMENT_VARIABLE,
    METRIC_NAME,
    REPO_ROOT,
    SET_FLAG,
    Checker,
    Source,
    chart_schema,
    chart_value_leaves,
    cli_commands,
    doc_sources,
    documented_chart_keys,
    emitted_event_reasons_and_annotations,
    emitted_metrics,
    exported_label_values,
    flag_mentions,
    reason_mentions,
    schema_has_path,
)
from gatewatch.config import CONFIG_FILE_VARIABLE, ENVIRONMENT_KEYS
from gatewatch.kube.events import EVENT_ANNOTATIONS, EVENT_REASONS
from gatewatch.metrics import LABEL_VALUES
from gatewatch.rules.model import Action


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


@pytest.fixture(scope="module")
def sources() -> list[Source]:
    return doc_sources()


# --- the docs against the code --------------------------------------------------------------


def test_every_name_the_docs_mention_is_one_the_code_emits_or_accepts(checker: Checker, sources: list[Source]):
    problems = [problem for source in sources for problem in checker.problems(source)]
    assert problems == [], "\n".join(problems)


def test_the_checks_see_the_names_at_all(sources: list[Source]):
    # Guards against a pattern that silently matches nothing.
    text = "\n".join(source.text for source in sources)
    assert len(set(METRIC_NAME.findall(text))) >= 10
    assert {m.name for s in sources for m in reason_mentions(s)} >= {"PodUpdateWarned", "RulesRejected"}
    assert {"gatewatch.io/effect", "gatewatch.io/mode"} <= set(ANNOTATION_KEY.findall(text))
    flags = {(command, flag) for s in sources for _, command, flag, _ in flag_mentions(s)}
    assert {("gatewatch run", "--timeout-seconds"), ("gatewatch check", "--format"),
            ("gatewatch uninstall-webhook", "--kubeconfig")} <= flags
    assert any(SET_FLAG.search(line) for line in text.splitlines())


INVENTED = """
Watch `gatewatch_admission_reviews` and `gatewatch_reviews_total` and
`gatewatch_queue_dropped_total{queue="alerts"}` and `gatewatch_lookup_failures_total{reason="x"}`.

| `gatewatch_queue_dropped_total{queue}` | Events (`events`) or alerts (`alerts-syslog`) lost |

`kubectl get events --field-selector reason=PodPatchWarned`; the Event reason `ExecRefused`.
The Event carries `gatewatch.io/verdict`.

```sh
gatewatch run --kubeconfig ~/.kube/config --timeout 5 \\
  --metrics-port 8080
helm upgrade gatewatch charts/gatewatch --set webhook.timeout=5
```

`gatewatch check --mode strict x.yaml`; set `alerts.http.token`; `GATEWATCH_LOG_LEVEL=debug`.
"""


def test_an_invented_name_of_every_kind_is_caught(checker: Checker):
    problems = "\n".join(checker.problems(Source("invented.md", INVENTED)))
    for invented in ("metric gatewatch_admission_reviews is not emitted (a counter: query gatewatch_admission_reviews_total)",
                     "metric gatewatch_reviews_total is not emitted",
                     "{queue='alerts'}", "has no label 'reason'", "'alerts-syslog' is none of its labels",
                     "reason PodPatchWarned", "reason ExecRefused", "gatewatch.io/verdict",
                     "`gatewatch run` has no option --timeout", "--set webhook.timeout",
                     "`gatewatch check --mode` takes", "alerts.http.token", "GATEWATCH_LOG_LEVEL"):
        assert invented in problems, f"{invented!r} not reported in:\n{problems}"
    assert "no option --metrics-port" not in problems and "no option --kubeconfig" not in problems


# --- the code's tables against what the code does -------------------------------------------


def test_the_event_tables_are_what_gatewatch_writes_on_its_events():
    reasons, annotations = emitted_event_reasons_and_annotations()
    assert reasons == EVENT_REASONS
    assert annotations == set(EVENT_ANNOTATIONS)


def test_the_bounded_label_values_are_what_the_emitters_use():
    from gatewatch.alert_sinks import HttpAlertSink, StdoutAlertSink
    from gatewatch.kube.events import METRICS_QUEUE

    assert LABEL_VALUES["queue"] == {METRICS_QUEUE, StdoutAlertSink.name, HttpAlertSink.name}
    assert LABEL_VALUES["action"] == LABEL_VALUES["effect"] == {action.value for action in Action}
    exported = exported_label_values()
    assert exported["queue"] == LABEL_VALUES["queue"] and exported["kind"] == LABEL_VALUES["kind"]
    facts = emitted_metrics()
    labelled = {label for metric in facts.values() for label in metric.labels}
    assert set(LABEL_VALUES) <= labelled


# --- the code against the docs: everything is documented ------------------------------------


def _read(relative: str) -> str:
    return (REPO_ROOT / relative).read_text()


def test_every_metric_and_bounded_label_value_is_in_operations_md():
    operations = _read("docs/operations.md")
    table_names = set(re.findall(r"^\|\s*`(gatewatch_[a-z0-9_]+)", operations, flags=re.M))
    families = {facts.family: facts for facts in emitted_metrics().values()}
    expected = {("%s_total" % f.family) if f.kind == "counter" else f.family for f in families.values()}
    assert expected - table_names == set(), "metrics missing from the table in docs/operations.md"
    backticked = set(re.findall(r"`([^`]+)`", operations))
    missing = {value for values in LABEL_VALUES.values() for value in values} - backticked
    assert missing == set(), f"label values not named in docs/operations.md: {sorted(missing)}"


def test_every_event_reason_and_annotation_is_in_operations_md():
    backticked = set(re.findall(r"`([^`]+)`", _read("docs/operations.md")))
    assert EVENT_REASONS - backticked == set()
    assert set(EVENT_ANNOTATIONS) - backticked == set()


def test_every_flag_of_every_command_is_documented(sources: list[Source]):
    documented = {(command, flag) for source in sources for _, command, flag, _ in flag_mentions(source)}
    missing = []
    for words, command in cli_commands().items():
        for param in command.get_params(click.Context(command)):
            opts = (*param.opts, *param.secondary_opts)
            if not isinstance(param, click.Option) or {"--help", "--version"} & set(opts):
                continue
            if not any((words, opt) in documented for opt in opts):
                missing.append(f"{words} {param.opts[-1]}")
    assert missing == [], f"flags no doc shows in a `gatewatch ...` line: {missing}"


def test_every_environment_variable_is_in_configuration_md():
    configuration = _read("docs/configuration.md")
    assert {*ENVIRONMENT_KEYS, CONFIG_FILE_VARIABLE} - set(ENVIRONMENT_VARIABLE.findall(configuration)) == set()


def test_the_chart_readme_documents_exactly_the_chart_values():
    schema = chart_schema()
    keys = documented_chart_keys()
    assert len(keys) > 30
    unknown = [f"charts/gatewatch/README.md:{line}: {key}" for key, line in keys.items()
               if not schema_has_path(schema, key.split("."))]
    assert unknown == [], f"not in values.schema.json: {unknown}"

    def documented(leaf: str) -> bool:
        parts = leaf.split(".")
        return any(".".join(parts[:end]) in keys for end in range(1, len(parts) + 1))

    # `global` is Helm's own (subcharts), not a gatewatch value.
    missing = [leaf for leaf in chart_value_leaves(schema) if leaf != "global" and not documented(leaf)]
    assert missing == [], f"chart values the README's Key table does not document: {missing}"
