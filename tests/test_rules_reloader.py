"""Rules reloaded at runtime from a ConfigMap-style mount (symlink swaps)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gatewatch import background
from gatewatch.engine import RuleEngine
from gatewatch.errors import RuleError
from gatewatch.kube.events import EventRecorder, ObjectRef
from gatewatch.metrics import Metrics
from gatewatch.rules_reloader import RulesReloader
from kube_emulator import kube_api_client, kube_emulator  # noqa: F401  (pytest fixtures)
from supervision import eventually, supervised

EXEC_RULE = """
  - id: exec-into-pod
    name: Exec into pod
    description: Someone runs a command in a container.
    severity: medium
    risk_score: 47
    query: 'kubernetes.audit.objectRef.subresource: "exec"'
"""
ATTACH_RULE = """
  - id: attach-to-pod
    name: Attach to pod
    description: Someone attaches to a container.
    severity: low
    risk_score: 21
    query: 'kubernetes.audit.objectRef.subresource: "attach"'
"""
BROKEN_RULE = """
  - id: attach-to-pod
    name: Attach to pod
    description: Someone attaches to a container.
    severity: extreme
    risk_score: 21
    query: 'kubernetes.audit.objectRef.subresource: "attach"'
"""


def rules_file(*rules: str) -> str:
    return "version: 1\nruleset: test\nrules:" + "".join(rules)


def connect(subresource: str) -> dict:
    return {"kubernetes": {"audit": {"verb": "create", "objectRef": {"resource": "pods", "subresource": subresource}}}}


class ConfigMapMount:
    """A directory laid out like a kubelet ConfigMap volume: rules.yaml -> ..data/rules.yaml.

    An update writes a new timestamped directory and swaps the ``..data``
    symlink atomically, as the kubelet does (the file's own path never changes).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.updates = 0
        self.path = root / "rules.yaml"

    def write(self, text: str) -> None:
        self.updates += 1
        version = self.root / f"..2026_11_22_05_00_{self.updates:02d}"
        version.mkdir()
        (version / "rules.yaml").write_text(text)
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(version.name)
        os.replace(temporary, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/rules.yaml")


@pytest.fixture
def mount(tmp_path: Path) -> ConfigMapMount:
    mount = ConfigMapMount(tmp_path)
    mount.write(rules_file(EXEC_RULE))
    return mount



def matched_ids(engine: RuleEngine, subresource: str) -> list[str]:
    return [match.rule.id for match in engine.evaluate(connect(subresource))]


async def test_a_valid_update_takes_effect_without_a_restart(mount: ConfigMapMount) -> None:
    metrics = Metrics()
    engine: RuleEngine | None = None

    def swap(ruleset) -> None:
        assert engine is not None
        engine.replace_rules(ruleset)

    reloader = RulesReloader([mount.path], interval=0.01, on_change=swap, metrics=metrics)
    engine = RuleEngine(reloader.load_initial())
    assert matched_ids(engine, "attach") == []

    async with supervised(background.rules_reload(reloader)):
        mount.write(rules_file(EXEC_RULE, ATTACH_RULE))
        await eventually(lambda: matched_ids(engine, "attach") == ["attach-to-pod"])
    assert matched_ids(engine, "exec") == ["exec-into-pod"]
    assert metrics.registry.get_sample_value("gatewatch_rules_loaded") == 2


def test_an_invalid_update_keeps_the_last_good_rules_and_is_reported_once(
    mount: ConfigMapMount, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    applied: list = []
    reloader = RulesReloader([mount.path], interval=1, on_change=applied.append, metrics=metrics)
    good = reloader.load_initial()

    mount.write(rules_file(EXEC_RULE, BROKEN_RULE))
    result = reloader.check()

    assert result.changed and not result.applied
    assert isinstance(result.error, RuleError)
    assert applied == [] and reloader.ruleset is good
    # The log names file, line, rule and field.
    assert f"{mount.path}:14, rule 'attach-to-pod', field 'severity'" in caplog.text
    assert "the previous rules stay in use" in caplog.text
    failures = "gatewatch_rules_reload_failures_total"
    assert metrics.registry.get_sample_value(failures) == 1

    # Polling the same broken content again does not report it again.
    assert not reloader.check().changed
    assert metrics.registry.get_sample_value(failures) == 1

    # Fixed: applied.
    mount.write(rules_file(EXEC_RULE, ATTACH_RULE))
    assert reloader.check().applied
    assert [rule.id for rule in applied[-1].rules] == ["exec-into-pod", "attach-to-pod"]
    assert reloader.last_error is None


def test_a_vanished_rule_file_is_rejected_and_named(mount: ConfigMapMount) -> None:
    reloader = RulesReloader([mount.path], interval=1, on_change=lambda ruleset: None)
    reloader.load_initial()
    (mount.root / "..data").unlink()
    result = reloader.check()
    assert not result.applied and str(mount.path) in str(result.error)


def test_invalid_rules_at_start_raise(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_file(BROKEN_RULE))
    reloader = RulesReloader([path], interval=1, on_change=lambda ruleset: None)
    with pytest.raises(RuleError, match="field 'severity'"):
        reloader.load_initial()


async def test_an_invalid_update_is_recorded_as_an_event_on_the_configmap(
    mount: ConfigMapMount, kube_emulator, kube_api_client
) -> None:
    recorder = EventRecorder(kube_api_client)
    configmap = ObjectRef(kind="ConfigMap", api_version="v1", name="gatewatch-rules", namespace="gatewatch")
    rejected_at = datetime(2026, 11, 22, 5, 0, tzinfo=timezone.utc)
    reloader = RulesReloader([mount.path], interval=1, on_change=lambda ruleset: None,
                             event_recorder=recorder, configmap=configmap, clock=lambda: rejected_at)
    reloader.load_initial()
    mount.write(rules_file(BROKEN_RULE))
    reloader.check()
    await recorder.drain(timeout=10)

    events = [obj.raw for (resource, _, _), obj in kube_emulator.objects.items() if resource.plural == "events"]
    assert len(events) == 1
    event = events[0]
    assert event["regarding"]["kind"] == "ConfigMap" and event["regarding"]["name"] == "gatewatch-rules"
    assert event["metadata"]["namespace"] == "gatewatch"
    assert event["reason"] == "RulesRejected" and "field 'severity'" in event["note"]
    assert event["eventTime"].startswith("2026-11-22T05:00:00.")  # the reloader's clock
