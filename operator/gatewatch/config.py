"""Operator settings: a YAML file, overridden by GATEWATCH_* variables, overridden by flags.

The keys are camelCase and named like the Helm values (docs/configuration.md is
the reference). Validation is pydantic's: unknown keys and wrong types are
errors, reported as ``config.yaml:14: webhook.timeoutSeconds: ...`` so the user
sees which key on which line is wrong.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from gatewatch.decision import Mode
from gatewatch.errors import ConfigError
from gatewatch.limits import MAX_WEBHOOK_TIMEOUT_SECONDS, MIN_WEBHOOK_TIMEOUT_SECONDS
from gatewatch.rules.model import Action

MODE_LABEL = "gatewatch.io/mode"
IGNORE_LABEL = "gatewatch.io/ignore"
DEFAULT_CONFIG_PATH = Path("/etc/gatewatch/config.yaml")


def _parse_mode(value: Any) -> Any:
    # Accept "Enforce" or " warn " as users type them; pydantic rejects the rest.
    if value is False:
        return "off"  # YAML 1.1 reads an unquoted `off` as false
    if isinstance(value, str):
        return value.strip().lower()
    return value


ModeField = Annotated[Mode, BeforeValidator(_parse_mode)]


class _Section(BaseModel):
    """camelCase keys in YAML, snake_case attributes in Python; unknown keys are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# Kubernetes' label syntax (apimachinery validation): the API server refuses a
# webhook namespaceSelector that breaks it, so gatewatch refuses it first.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


def _label_key(value: str) -> str:
    prefix = value.rpartition("/")[0]
    if not _LABEL_KEY.match(value) or len(prefix) > 253:
        raise ValueError(f"{value!r} is not a Kubernetes label key")
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes label value")
    return value


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


class LabelSelectorRequirement(_Section):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[LabelValue, ...] = ()

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> "LabelSelectorRequirement":
        # As Kubernetes validates a label selector.
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class NamespaceSelectorMode(_Section):
    """One entry of ``namespaces.selectors``: a Kubernetes label selector and the mode it gives."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()
    mode: ModeField


class NamespacesSettings(_Section):
    # The platform team's explicit word per namespace: may loosen or tighten.
    modes: dict[str, ModeField] = Field(default_factory=dict)
    # A selector may only raise a namespace's mode, unless every label it reads is
    # listed in protected_labels: then it may loosen too (namespace_modes.py).
    selectors: tuple[NamespaceSelectorMode, ...] = ()
    # Label keys only the platform team can set (guarded by the chart's policy or your own).
    protected_labels: tuple[LabelKey, ...] = ()
    exempt: tuple[str, ...] = ()
    # True: namespaces labelled gatewatch.io/ignore=true are left out of the webhook.
    # Whoever may label a namespace can then opt it out (docs/install.md: guard the label).
    ignore_label: bool = False

    @model_validator(mode="after")
    def _mode_label_is_never_protected(self) -> "NamespacesSettings":
        if MODE_LABEL in self.protected_labels:
            raise ValueError(f"{MODE_LABEL} cannot be protected: it may only tighten a namespace's mode")
        return self


def _known_pack(name: str) -> str:
    from gatewatch.rules.packs import pack_names

    if name not in pack_names():
        raise ValueError(f"unknown rule pack {name!r}; the packs are: {', '.join(pack_names())}")
    return name


def _parse_action(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class PackSetting(_Section):
    """One entry of ``rules.packs``: a rule pack shipped with gatewatch, and the action of all its rules."""

    name: Annotated[str, AfterValidator(_known_pack)]
    # None: the actions the pack's rules are written with.
    action: Annotated[Action | None, BeforeValidator(_parse_action)] = None


class PackExemptions(_Section):
    """Requests the packs leave alone, as Pod Security Admission's ``exemptions`` (exact names)."""

    usernames: tuple[str, ...] = ()
    runtime_class_names: tuple[str, ...] = Field(default=(), alias="runtimeClassNames")
    namespaces: tuple[str, ...] = ()


# What an install without configuration runs: Pod Security baseline, warning only.
DEFAULT_PACKS = (PackSetting(name="pod-security-baseline", action=Action.WARN),)


class RulesSettings(_Section):
    files: tuple[Path, ...] = ()
    packs: tuple[PackSetting, ...] = DEFAULT_PACKS
    pack_exemptions: PackExemptions = Field(default_factory=PackExemptions)
    # False: only `files`, without the packaged rules.yaml.
    packaged: bool = True
    reload_interval_seconds: float = Field(default=10.0, gt=0)
    # The ConfigMap (in `namespace`) the files are mounted from: a rejected update is an Event on it.
    config_map_name: str = "gatewatch-rules"
    # False: files without an enabled rule are refused, at start and on reload (they would turn
    # protection off); true: accepted, and gatewatch then evaluates nothing.
    allow_empty: bool = False


class ServiceReference(_Section):
    name: str = "gatewatch"
    namespace: str | None = None  # None: gatewatch's own namespace
    port: int = Field(default=443, ge=1, le=65535)


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return value.rstrip("/") or "/"


class WebhookSettings(_Section):
    configuration_name: str = "gatewatch"
    # For the webhook entries of namespaces not in enforce mode.
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"
    # For the entries of namespaces in enforce mode: an outage must not turn denials into admits.
    enforce_failure_policy: Literal["Ignore", "Fail"] = "Fail"
    timeout_seconds: int = Field(default=5, ge=MIN_WEBHOOK_TIMEOUT_SECONDS, le=MAX_WEBHOOK_TIMEOUT_SECONDS)
    service: ServiceReference = Field(default_factory=ServiceReference)
    url: str | None = None
    path: Annotated[str, AfterValidator(_url_path)] = "/validate"
    # Orders gatewatch versions in a rolling upgrade (the chart sets the release revision):
    # the reconciler stands back for a configuration written by a higher generation.
    generation: int = Field(default=0, ge=0)
    # A PEM CA bundle: when set, only TLS clients with a certificate it signed are
    # served (the kube-apiserver's webhook client certificate; docs/install.md).
    client_ca: Path | None = Field(default=None, alias="clientCA")  # spelled like caBundle, not clientCa


MiB = 1024 * 1024


class ServerLimits(_Section):
    """What one caller can make the webhook server do (docs/operations.md#limits-of-the-webhook-server).

    The defaults keep gatewatch under the chart's 256Mi memory limit whatever reaches the port.
    """

    # Open connections; at the cap the connection idle or stalled longest is closed (never one
    # whose review is being evaluated).
    max_connections: int = Field(default=100, ge=1, le=10_000)
    # A new connection completes its TLS handshake, and any request its headers, within this.
    header_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A keep-alive connection with no request for this long is closed.
    idle_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # The JSON of one whole object in a review (etcd stores objects up to 1.5 MiB, and JSON
    # escaping can double that): a Pod CREATE may be 1 object plus 256 KiB, an UPDATE 2 objects.
    object_bytes: int = Field(default=3 * MiB, ge=64 * 1024, le=64 * MiB)
    # exec/attach reviews carry options only: the command comes from the request URL, which
    # the API server reads up to 1 MiB (escaping again can double it).
    connect_bytes: int = Field(default=2 * MiB, ge=16 * 1024, le=64 * MiB)
    # Bodies over 64 KiB held at once (read, parsed, evaluated); more wait.
    buffered_body_bytes: int = Field(default=24 * MiB, ge=1 * MiB, le=4096 * MiB)
    # JSON nesting and values (array elements + object members) in one body, checked before parsing.
    max_json_depth: int = Field(default=100, ge=16, le=500)
    max_json_values: int = Field(default=100_000, ge=1_000, le=10_000_000)
    # Reviews parsed and in evaluation at once, and the JSON values they hold together; more wait
    # in line (first come, first served), at most queued_reviews of them: beyond that, 429.
    concurrent_reviews: int = Field(default=32, ge=1, le=10_000)
    json_values_in_flight: int = Field(default=400_000, ge=1_000, le=100_000_000)
    queued_reviews: int = Field(default=64, ge=0, le=100_000)
    # Every review is answered within this (an error when it must), counted from its headers;
    # None: webhook.timeoutSeconds - 1, so the answer arrives before the API server gives up.
    deadline_seconds: float | None = Field(default=None, gt=0, le=30)

    @model_validator(mode="after")
    def _largest_review_fits(self) -> "ServerLimits":
        largest = review_body_limit(objects=2, limits=self)
        if self.buffered_body_bytes < largest:
            raise ValueError(
                f"bufferedBodyBytes ({self.buffered_body_bytes}) must hold the largest review body "
                f"gatewatch reads ({largest}: 2 x objectBytes + {REVIEW_ENVELOPE_BYTES})")
        if self.json_values_in_flight < self.max_json_values:
            raise ValueError(
                f"jsonValuesInFlight ({self.json_values_in_flight}) must be at least maxJsonValues "
                f"({self.max_json_values})")
        return self


# What a review carries besides whole objects and exec options: apiVersion, uid, kind and
# resource, userInfo (groups and extra can be long), options.
REVIEW_ENVELOPE_BYTES = 256 * 1024


def review_body_limit(*, objects: int, limits: ServerLimits) -> int:
    """The largest body read for a review carrying ``objects`` whole objects (0: exec/attach options)."""
    payload = objects * limits.object_bytes if objects else limits.connect_bytes
    return REVIEW_ENVELOPE_BYTES + payload


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8443, ge=0, le=65535)  # 0: any free port (tests)
    metrics_port: int = Field(default=8080, ge=0, le=65535)  # 0: no metrics/health server
    # On SIGTERM: report not-ready and keep answering this long before closing the listener,
    # while the API server's endpoints catch up (the chart's preStop sleep covers the rest).
    drain_seconds: float = Field(default=5.0, ge=0, le=60)
    limits: ServerLimits = Field(default_factory=ServerLimits)


class CertificatesSettings(_Section):
    mode: Literal["self-managed", "files"] = "self-managed"
    secret_name: str = "gatewatch-tls"
    cert_file: Path = Path("/etc/gatewatch/tls/tls.crt")
    key_file: Path = Path("/etc/gatewatch/tls/tls.key")
    ca_file: Path = Path("/etc/gatewatch/tls/ca.crt")
    work_dir: Path = Path("/tmp/gatewatch")


class HttpAlertsSettings(_Section):
    url: str | None = Field(default=None, repr=False)  # may carry credentials: never logged
    url_file: Path | None = None
    batch_size: int = Field(default=100, ge=1)
    flush_interval_seconds: float = Field(default=2.0, gt=0)
    buffer_size: int = Field(default=10000, ge=1)
    # Seconds one POST may take (a hanging endpoint): then it is retried, the batch kept.
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A file that also holds the buffered alerts, so a restart keeps them (None: memory only).
    spill_file: Path | None = None
    spill_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    @property
    def enabled(self) -> bool:
        return self.url is not None or self.url_file is not None


class AlertsSettings(_Section):
    stdout: bool = True
    http: HttpAlertsSettings = Field(default_factory=HttpAlertsSettings)
    # Dry-run requests have no side effects (sideEffects: NoneOnDryRun): no Event and, unless
    # this is true, no alert either; true: an alert tagged gatewatch.dry_run (a rehearsal leaves a trace).
    dry_run: bool = False


class EventsSettings(_Section):
    queue_size: int = Field(default=1000, ge=1)


class NewTermsSettings(_Section):
    config_map_name: str = "gatewatch-new-terms"


class PodLookupSettings(_Section):
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    cache_ttl_seconds: float = Field(default=30.0, ge=0)


class Settings(_Section):
    mode: ModeField = Mode.WARN
    namespace: str = "gatewatch"
    namespaces: NamespacesSettings = Field(default_factory=NamespacesSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    certificates: CertificatesSettings = Field(default_factory=CertificatesSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    new_terms: NewTermsSettings = Field(default_factory=NewTermsSettings)
    pod_lookup: PodLookupSettings = Field(default_factory=PodLookupSettings)

    @model_validator(mode="after")
    def _enforce_fails_at_least_as_closed(self) -> "Settings":
        webhook = self.webhook
        if webhook.failure_policy == "Fail" and webhook.enforce_failure_policy == "Ignore":
            raise ValueError("webhook.enforceFailurePolicy: Ignore with webhook.failurePolicy: Fail would fail "
                             "open only where gatewatch enforces")
        return self

    @model_validator(mode="after")
    def _lookups_fit_in_the_webhook_timeout(self) -> "Settings":
        # A review may wait for a namespace lookup and a pod lookup: both must end
        # well before the API server gives up on the webhook.
        if 2 * self.pod_lookup.timeout_seconds >= self.webhook.timeout_seconds:
            raise ValueError(
                f"podLookup.timeoutSeconds ({self.pod_lookup.timeout_seconds:g}) must be less than half of "
                f"webhook.timeoutSeconds ({self.webhook.timeout_seconds}): a review may do two lookups"
            )
        deadline = self.server.limits.deadline_seconds
        if deadline is not None and deadline >= self.webhook.timeout_seconds:
            raise ValueError(
                f"server.limits.deadlineSeconds ({deadline:g}) must be less than webhook.timeoutSeconds "
                f"({self.webhook.timeout_seconds}): gatewatch answers before the API server gives up"
            )
        return self

    @property
    def review_deadline_seconds(self) -> float:
        """How long a review may take from its headers to its answer (``server.limits.deadlineSeconds``)."""
        deadline = self.server.limits.deadline_seconds
        return deadline if deadline is not None else self.webhook.timeout_seconds - 1.0

    @property
    def service_namespace(self) -> str:
        return self.webhook.service.namespace or self.namespace

    @property
    def excluded_namespaces(self) -> tuple[str, ...]:
        """Namespaces the API server never sends (the webhook's namespaceSelector), sorted."""
        return tuple(sorted({"kube-system", self.namespace, *self.namespaces.exempt}))


# GATEWATCH_<KEY> -> the dotted camelCase key it sets (scalars only).
ENVIRONMENT_KEYS: dict[str, str] = {
    "GATEWATCH_MODE": "mode",
    "GATEWATCH_NAMESPACE": "namespace",
    "GATEWATCH_WEBHOOK_CONFIGURATION_NAME": "webhook.configurationName",
    "GATEWATCH_FAILURE_POLICY": "webhook.failurePolicy",
    "GATEWATCH_ENFORCE_FAILURE_POLICY": "webhook.enforceFailurePolicy",
    "GATEWATCH_TIMEOUT_SECONDS": "webhook.timeoutSeconds",
    "GATEWATCH_SERVICE_NAME": "webhook.service.name",
    "GATEWATCH_SERVICE_NAMESPACE": "webhook.service.namespace",
    "GATEWATCH_SERVICE_PORT": "webhook.service.port",
    "GATEWATCH_WEBHOOK_URL": "webhook.url",
    "GATEWATCH_WEBHOOK_CLIENT_CA": "webhook.clientCA",
    "GATEWATCH_SERVER_HOST": "server.host",
    "GATEWATCH_SERVER_PORT": "server.port",
    "GATEWATCH_METRICS_PORT": "server.metricsPort",
    "GATEWATCH_CERTIFICATES_MODE": "certificates.mode",
    "GATEWATCH_ALERTS_STDOUT": "alerts.stdout",
    "GATEWATCH_ALERTS_HTTP_URL_FILE": "alerts.http.urlFile",
}
CONFIG_FILE_VARIABLE = "GATEWATCH_CONFIG"


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the file, then the environment, then ``overrides`` (dotted camelCase keys).

    ``config_file`` None: ``$GATEWATCH_CONFIG`` if set, else defaults only.
    ``overrides`` values of None are ignored (a flag not given). Raises ConfigError.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(environ[CONFIG_FILE_VARIABLE])
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = str(config_file) if config_file is not None else "<settings>"
    if config_file is not None:
        data, lines = _read_yaml(config_file)
    for variable, key in ENVIRONMENT_KEYS.items():
        if environ.get(variable) not in (None, ""):
            _set_dotted(data, key, environ[variable])
            lines.pop(tuple(key.split(".")), None)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
            lines.pop(tuple(key.split(".")), None)
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, lines), source=source) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror or error}", source=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"not valid YAML: {reason}", source=str(path), line=line) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping of settings", source=str(path), line=1)
    lines: dict[tuple[str, ...], int] = {}
    _collect_lines(node, (), lines)
    return data, lines


def _collect_lines(node: yaml.Node | None, path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    """Record the line of every key and list item, to point errors at the file."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            lines[key_path] = key_node.start_mark.line + 1
            _collect_lines(value_node, key_path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            item_path = (*path, str(index))
            lines[item_path] = item.start_mark.line + 1
            _collect_lines(item, item_path, lines)


def _describe(error: ValidationError, lines: dict[tuple[str, ...], int]) -> str:
    problems = []
    for detail in error.errors():
        # pydantic adds the validator name (e.g. "function-after[...]") to some locations.
        loc = tuple(str(part) for part in detail["loc"] if not str(part).startswith("function-"))
        key = ".".join(loc) or "<top level>"
        line = _nearest_line(loc, lines)
        where = f"line {line}: " if line is not None else ""
        problems.append(f"{where}{key}: {detail['msg']}")
    return "; ".join(problems)


def _nearest_line(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    # An unknown or missing key has no line of its own: use its parent's.
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[parts[-1]] = value
