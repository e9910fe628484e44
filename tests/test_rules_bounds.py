"""A rules update cannot stall or disable the webhook: the load is bounded, errors are short,
and an update that would evaluate nothing is refused.

Reproductions from issue 9: a 536-byte alias-bomb update stalled reviews for
16-20 s, peaked at 2.6 GiB and logged a 522 MB line; YAML nested 5,000 deep
raised a RecursionError that was not counted as a reload failure; `rules: []`
was accepted.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from gatewatch.errors import MAX_MESSAGE_CHARS, RuleError
from gatewatch.metrics import Metrics
from gatewatch.rules import load_rules, load_rules_text
from gatewatch.rules.yamlsource import MAX_DEPTH, MAX_FILE_BYTES
from gatewatch.rules_reloader import RulesReloader

RULE = """\
  - id: exec-into-pod
    name: {name}
    description: Someone runs a command in a container.
    severity: {severity}
    risk_score: 47
    query: {query}
"""


def rules_file(*, name: str = "Exec into pod", severity: str = "medium",
               query: str = "'kubernetes.audit.objectRef.subresource: \"exec\"'", before: str = "") -> str:
    return "version: 1\nruleset: test\n" + before + "rules:\n" + RULE.format(name=name, severity=severity, query=query)


def alias_bomb(levels: int, width: int = 9) -> str:
    """A top-level ``bomb:`` of anchors, each ``width`` aliases of the previous one:
    ``*a<levels>`` is width**levels strings once expanded, in a few hundred bytes."""
    lines = ["bomb:", '  x0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"  x{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def bounded_load_error(text: str) -> tuple[RuleError, int]:
    """The error, and the peak memory Python allocated while loading."""
    tracemalloc.start()
    try:
        with pytest.raises(RuleError) as caught:
            load_rules_text(text, file="rules.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value, peak


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    # 9**9 = 387 million strings once expanded.
    text = rules_file(name="*a9", before=alias_bomb(9))
    assert len(text.encode()) < 1_000
    error, peak = bounded_load_error(text)
    assert "excessive YAML aliasing" in str(error) and "alias bomb" in str(error)
    assert peak < 5 * 1024 * 1024, peak
    assert len(str(error)) < 400


def test_a_value_from_a_large_alias_is_never_rendered_in_the_message() -> None:
    # Under the node bound (9**5 = 59,049 strings), used where a string belongs; the
    # anchors sit in the rule's false_positives, which is read after its name.
    anchors = '      - &a0 ["lol"]\n' + "".join(
        f"      - &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]\n" for level in range(1, 6))
    text = rules_file(name="*a5").replace("  - id: exec-into-pod\n",
                                          "  - id: exec-into-pod\n    false_positives:\n" + anchors)
    error, _ = bounded_load_error(text)
    assert "field 'name': must be a non-empty string (got a list)" in str(error)
    assert len(str(error)) < 400


def test_a_long_value_is_cut_in_the_message() -> None:
    error, _ = bounded_load_error(rules_file(severity="x" * 1_000_000))
    message = str(error)
    assert "field 'severity': must be one of" in message and "(1,000,000 characters)" in message
    assert len(message) < 400


def test_a_long_query_line_is_shown_around_the_error() -> None:
    query = "a:b and " * 125 + ") and " + "a:b and " * 3_000 + "a:b"
    error, _ = bounded_load_error(rules_file(query=f"'{query}'"))
    message = str(error)
    assert "KQL syntax error at query line 1, column 1001" in message
    shown, caret = message.splitlines()[-2:]
    assert len(shown) < 200
    assert shown[caret.index("^")] == ")"


def test_a_query_beyond_the_length_bound_is_refused_unparsed() -> None:
    error, _ = bounded_load_error(rules_file(query="'" + "a:b and " * 5_000 + "a:b'"))
    assert "field 'query': longer than 32,768 characters (40,003)" in str(error)


def test_a_message_is_bounded_whatever_its_parts() -> None:
    error = RuleError("x" * 10_000_000, file="rules.yaml", field="f" * 10_000, rule_id="r" * 10_000)
    assert len(str(error)) < MAX_MESSAGE_CHARS + 1_000


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000])
def test_deep_nesting_is_a_rule_error(depth: int) -> None:
    text = rules_file(before="deep: " + "[" * depth + "]" * depth + "\n")
    error, _ = bounded_load_error(text)
    assert "nest" in str(error) and error.file == "rules.yaml"


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    padding = "#" * 1023 + "\n"
    path.write_text(rules_file() + padding * (MAX_FILE_BYTES // 1024 + 1))
    with pytest.raises(RuleError, match=f"larger than {MAX_FILE_BYTES:,} bytes"):
        load_rules(path)


def test_rule_ids_are_bounded() -> None:
    text = rules_file().replace("id: exec-into-pod", "id: " + "a" * 254)
    with pytest.raises(RuleError, match="at most 253"):
        load_rules_text(text)


# --- the reloader --------------------------------------------------------------------


def reloader_for(path: Path, metrics: Metrics, **kwargs) -> tuple[RulesReloader, list]:
    applied: list = []
    reloader = RulesReloader([path], interval=1, on_change=applied.append, metrics=metrics, **kwargs)
    return reloader, applied


FAILURES = "gatewatch_rules_reload_failures_total"


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ("version: 1\nruleset: t\nrules: []\n", "no rules: nothing would be evaluated"),
        (rules_file(before="deep: " + "[" * 5_000 + "]" * 5_000 + "\n"), "nest"),
        (rules_file(name="*a9", before=alias_bomb(9)), "alias bomb"),
    ],
    ids=["empty", "deep", "alias-bomb"],
)
def test_a_refused_update_counts_as_a_reload_failure_and_keeps_the_rules(
    tmp_path: Path, update: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file())
    metrics = Metrics()
    reloader, applied = reloader_for(path, metrics)
    good = reloader.load_initial()

    path.write_text(update)
    result = reloader.check()

    assert result.changed and not result.applied and expected in str(result.error)
    assert applied == [] and reloader.ruleset is good
    assert metrics.registry.get_sample_value(FAILURES) == 1
    assert max(len(record.getMessage()) for record in caplog.records) < MAX_MESSAGE_CHARS + 1_000


def test_an_empty_update_is_applied_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file())
    reloader, applied = reloader_for(path, Metrics(), allow_empty=True)
    reloader.load_initial()
    path.write_text("version: 1\nruleset: t\nrules: []\n")
    assert reloader.check().applied and applied[-1].rules == ()


def test_whatever_the_load_raises_is_a_counted_failure(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file())
    calls: list = []

    def load(paths):
        calls.append(paths)
        if len(calls) > 1:
            raise RecursionError("maximum recursion depth exceeded")
        return load_rules(paths)

    metrics = Metrics()
    reloader, applied = reloader_for(path, metrics, load=load)
    good = reloader.load_initial()
    path.write_text(rules_file(name="Changed"))
    result = reloader.check()
    assert not result.applied and "RecursionError" in str(result.error) and reloader.ruleset is good
    assert metrics.registry.get_sample_value(FAILURES) == 1


def many_rules(count: int) -> str:
    """``count`` rules: the shipped ones repeated, each copy with a distinct id."""
    import yaml

    from gatewatch.rules import default_rules_path

    shipped = yaml.safe_load(default_rules_path().read_text(encoding="utf-8"))["rules"]
    rules = [{**shipped[index % len(shipped)], "id": f"{shipped[index % len(shipped)]['id']}-{index}"}
             for index in range(count)]
    return yaml.dump({"version": 1, "ruleset": "many", "rules": rules}, Dumper=yaml.CSafeDumper, sort_keys=False)


async def test_a_reload_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "rules.yaml"
    path.write_text(rules_file())
    update = many_rules(1_000)
    applied: list = []
    reloader = RulesReloader([path], interval=0.01, on_change=applied.append)
    reloader.load_initial()
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def heartbeat() -> None:  # what a review waits for: a turn of the loop
        last = loop.time()
        while True:
            await asyncio.sleep(0.002)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async def poll() -> None:  # what the supervisor does, every interval
        while True:
            await reloader.reload_once()
            await asyncio.sleep(0.01)

    beating = asyncio.create_task(heartbeat())
    reloading = asyncio.create_task(poll())
    try:
        await asyncio.sleep(0.05)
        gaps.clear()
        started = loop.time()
        path.write_text(update)
        while not applied:
            await asyncio.sleep(0.005)
        reload_took = loop.time() - started
    finally:
        for task in (beating, reloading):
            task.cancel()
        await asyncio.gather(beating, reloading, return_exceptions=True)
    assert len(applied[-1].rules) == 1_000
    # Loading 1,000 rules takes a good part of a second; the loop kept turning meanwhile.
    # Counted in turns, not milliseconds, so a loaded machine cannot fail it: a load run on
    # the loop itself would leave only the few turns around the reloader's own polls.
    print(f"{len(gaps)} loop turns, longest {max(gaps) * 1000:.1f} ms, while the reload took {reload_took * 1000:.0f} ms")
    assert len(gaps) >= 50, (len(gaps), reload_took)


@pytest.mark.parametrize("value", ["1" * 5_000, "2026-13-45", "0x_"])
def test_a_scalar_its_tag_cannot_read_is_a_located_rule_error(value: str) -> None:
    error, _ = bounded_load_error(rules_file(name=value))
    assert str(error).startswith("rules.yaml:5: invalid YAML value: ") and len(str(error)) < 300


@pytest.mark.parametrize("command", [["rules", "lint"], ["check", "--rules"], ["replay", "--rules"]])
def test_the_commands_refuse_an_empty_rule_set_unless_told(tmp_path: Path, command: list[str]) -> None:
    from click.testing import CliRunner

    from gatewatch.cli import main

    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\nruleset: t\nrules: []\n")
    log = tmp_path / "audit.jsonl"
    log.write_text("")
    target = [] if command[0] == "rules" else [str(log)]
    refused = CliRunner().invoke(main, [*command, str(empty), *target])
    assert refused.exit_code == 2 and "no rules: nothing would be evaluated" in refused.stderr
    allowed = CliRunner().invoke(main, [*command, str(empty), "--allow-empty-rules", *target])
    assert allowed.exit_code == 0, allowed.output
