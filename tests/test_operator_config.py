"""`gatewatch run` settings: file < environment < flags, and errors that say where."""
from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.config import load_settings
from gatewatch.decision import Mode
from gatewatch.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_contract():
    settings = load_settings(environ={})
    assert settings.mode is Mode.WARN
    assert settings.webhook.failure_policy == "Ignore"
    assert settings.webhook.timeout_seconds == 5
    assert settings.webhook.path == "/validate"
    assert (settings.server.port, settings.server.metrics_port) == (8443, 8080)
    assert settings.certificates.mode == "self-managed"
    assert settings.excluded_namespaces == ("gatewatch", "kube-system")
    assert settings.rules.config_map_name == "gatewatch-rules"
    assert settings.new_terms.config_map_name == "gatewatch-new-terms"
    # Opting out by label is the platform team's choice to make (issue 9: labels only tighten).
    assert settings.namespaces.ignore_label is False
    assert settings.webhook.enforce_failure_policy == "Fail"  # enforce namespaces fail closed
    assert settings.webhook.client_ca is None  # any TLS client is served until a client CA is set


def test_file_values_with_camel_case_keys_as_in_the_helm_values(tmp_path):
    path = write(tmp_path, """
mode: Enforce
namespace: security
namespaces:
  modes: {payments: enforce, sandbox: off}  # unquoted off: YAML 1.1 says false
  selectors:
    - {matchLabels: {env: prod}, mode: enforce}
    - {matchExpressions: [{key: tier, operator: In, values: [db]}], mode: audit}
  exempt: [monitoring]
webhook:
  failurePolicy: Fail
  timeoutSeconds: 3
  service: {name: gw, port: 8443}
podLookup: {timeoutSeconds: 0.5, cacheTtlSeconds: 10}
rules: {configMapName: edge-gatewatch-rules}
""")
    settings = load_settings(config_file=path, environ={})
    assert settings.mode is Mode.ENFORCE
    assert settings.namespaces.modes == {"payments": Mode.ENFORCE, "sandbox": Mode.OFF}
    assert settings.namespaces.selectors[1].match_expressions[0].values == ("db",)
    assert settings.webhook.failure_policy == "Fail"
    assert settings.service_namespace == "security"  # defaults to gatewatch's own namespace
    assert settings.excluded_namespaces == ("kube-system", "monitoring", "security")
    assert settings.pod_lookup.timeout_seconds == 0.5
    assert settings.rules.config_map_name == "edge-gatewatch-rules"


def test_environment_overrides_file_and_flags_override_environment(tmp_path):
    path = write(tmp_path, "mode: audit\nwebhook: {timeoutSeconds: 3, failurePolicy: Fail}\n")
    environ = {"GATEWATCH_CONFIG": str(path), "GATEWATCH_MODE": "enforce", "GATEWATCH_TIMEOUT_SECONDS": "7"}
    settings = load_settings(environ=environ, overrides={"webhook.timeoutSeconds": 9, "mode": None})
    assert settings.mode is Mode.ENFORCE  # env over file; a flag not given (None) changes nothing
    assert settings.webhook.timeout_seconds == 9  # flag over env
    assert settings.webhook.failure_policy == "Fail"  # file, untouched


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("webhook:\n  timeoutSeconds: 50\n", "config.yaml: line 2: webhook.timeoutSeconds"),
        ("mode: warn\nnamespaces:\n  modes:\n    payments: strict\n", "line 4: namespaces.modes.payments"),
        ("webhook:\n  failurPolicy: Fail\n", "line 2: webhook.failurPolicy: Extra inputs are not permitted"),
        ("namespaces:\n  selectors:\n    - {matchLabels: {a: b}}\n", "line 3: namespaces.selectors.0.mode"),
        ("mode: warn\nwebhook: path: /x\n", "config.yaml:2: not valid YAML"),
        ("- warn\n", "config.yaml:1: must be a mapping"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path, environ={})
    assert expected in str(caught.value)


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError, match="webhook.failurePolicy"):
        load_settings(environ={"GATEWATCH_FAILURE_POLICY": "Sometimes"})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_settings(config_file=tmp_path / "missing.yaml", environ={})


def test_lookup_timeouts_must_fit_in_the_webhook_timeout():
    with pytest.raises(ConfigError, match="podLookup.timeoutSeconds .* less than half of webhook.timeoutSeconds"):
        load_settings(environ={"GATEWATCH_TIMEOUT_SECONDS": "3"}, overrides={"podLookup.timeoutSeconds": 1.5})
    assert load_settings(environ={"GATEWATCH_TIMEOUT_SECONDS": "3"}).webhook.timeout_seconds == 3


@pytest.mark.parametrize("timeout", ["1", "2", "31"])
def test_webhook_timeouts_outside_3_to_30_seconds_are_refused(timeout):
    with pytest.raises(ConfigError, match="webhook.timeoutSeconds"):
        load_settings(environ={"GATEWATCH_TIMEOUT_SECONDS": timeout}, overrides={"podLookup.timeoutSeconds": 0.1})


def test_client_ca_and_the_namespace_switches_are_read_as_the_chart_writes_them(tmp_path):
    path = write(tmp_path, """
webhook: {clientCA: /etc/gatewatch/client-ca/ca.crt, enforceFailurePolicy: Ignore}
namespaces: {ignoreLabel: true, protectedLabels: [tier, example.com/owner]}
""")
    settings = load_settings(config_file=path, environ={})
    assert settings.webhook.client_ca == Path("/etc/gatewatch/client-ca/ca.crt")
    assert settings.namespaces.ignore_label is True
    assert settings.namespaces.protected_labels == ("tier", "example.com/owner")
    assert settings.webhook.enforce_failure_policy == "Ignore"
    assert load_settings(environ={"GATEWATCH_ENFORCE_FAILURE_POLICY": "Ignore"}).webhook.enforce_failure_policy == (
        "Ignore")


def test_enforce_namespaces_never_fail_more_open_than_the_others():
    with pytest.raises(ConfigError, match="enforceFailurePolicy: Ignore with webhook.failurePolicy: Fail"):
        load_settings(environ={"GATEWATCH_FAILURE_POLICY": "Fail", "GATEWATCH_ENFORCE_FAILURE_POLICY": "Ignore"})


def test_a_protected_label_must_be_a_label_key(tmp_path):
    with pytest.raises(ConfigError, match="line 2: namespaces.protectedLabels.0"):
        load_settings(config_file=write(tmp_path, "namespaces:\n  protectedLabels: ['not a key']\n"), environ={})
    from_environment = load_settings(environ={"GATEWATCH_WEBHOOK_CLIENT_CA": "/ca.pem"})
    assert from_environment.webhook.client_ca == Path("/ca.pem")


def test_an_empty_rule_set_is_refused_by_default_and_allowed_by_setting(tmp_path) -> None:
    from gatewatch.config import load_settings as _load

    config = tmp_path / "config.yaml"
    config.write_text("rules:\n  allowEmpty: true\n")
    assert _load(environ={}).rules.allow_empty is False
    assert _load(config_file=config, environ={}).rules.allow_empty is True


def test_the_config_file_in_configuration_md_is_exactly_the_defaults():
    # Every key it lists, with the value it states, is what gatewatch uses when the key is unset.
    import re

    import yaml

    from gatewatch.config import Settings

    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    block = re.search(r"## The config file, with its defaults\n\n```yaml\n(.*?)```", text, re.S)
    assert block is not None
    assert Settings.model_validate(yaml.safe_load(block.group(1))) == Settings()


def test_server_limits_that_cannot_work_together_are_refused():
    with pytest.raises(ConfigError, match="bufferedBodyBytes .* must hold the largest review body"):
        load_settings(environ={}, overrides={"server.limits.bufferedBodyBytes": 4 * 1024 * 1024})
    with pytest.raises(ConfigError, match="jsonValuesInFlight .* at least maxJsonValues"):
        load_settings(environ={}, overrides={"server.limits.jsonValuesInFlight": 50_000})
    with pytest.raises(ConfigError, match="deadlineSeconds .* less than webhook.timeoutSeconds"):
        load_settings(environ={}, overrides={"server.limits.deadlineSeconds": 5})
    settings = load_settings(environ={}, overrides={"webhook.timeoutSeconds": 10})
    assert settings.review_deadline_seconds == 9.0  # default: one second before the API server gives up
