"""`gatewatch run` and `gatewatch uninstall-webhook`: the operator's commands.

kopf and the Kubernetes client are imported inside the commands, so the
offline commands (`check`, `replay`, `rules`) start without them.
Exit codes: 0 stopped cleanly; 2 bad configuration or setup (the message names
the file, line and key, or the Kubernetes object).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gatewatch.errors import GatewatchError
from gatewatch.limits import MAX_WEBHOOK_TIMEOUT_SECONDS, MIN_WEBHOOK_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from gatewatch.config import Settings

EXIT_BAD_SETUP = 2
_MODES = click.Choice(["off", "audit", "warn", "enforce"], case_sensitive=False)

_config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file (env GATEWATCH_CONFIG). See docs/configuration.md.",
)
_kubeconfig_option = click.option(
    "--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
    help="Use this kubeconfig instead of the in-cluster service account.",
)
_context_option = click.option("--context", help="kubeconfig context (default: the current one).")


@click.command("run")
@_config_option
@_kubeconfig_option
@_context_option
@click.option("--mode", type=_MODES, help="Default mode for namespaces without one.")
@click.option("--namespace", help="gatewatch's own namespace (env GATEWATCH_NAMESPACE).")
@click.option("--rules", "rules_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Rule file appended to rules.files; repeat for more.")
@click.option("--pack", "packs", multiple=True, metavar="NAME[=ACTION]",
              help="Rule pack appended to rules.packs (see `gatewatch rules packs`); repeat for more.")
@click.option("--failure-policy", type=click.Choice(["Ignore", "Fail"]),
              help="failurePolicy of the webhook entries for namespaces not in enforce mode (webhook.failurePolicy).")
@click.option("--timeout-seconds", type=click.IntRange(MIN_WEBHOOK_TIMEOUT_SECONDS, MAX_WEBHOOK_TIMEOUT_SECONDS),
              help="The webhook's timeoutSeconds.")
@click.option("--webhook-url", help="Local development: register clientConfig.url (scheme://host:port) "
                                    "instead of the Service.")
@click.option("--host", help="Listen address of the webhook and metrics servers.")
@click.option("--port", type=click.IntRange(0, 65535), help="HTTPS webhook port.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="HTTP port of /metrics, /livez, /readyz.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    config_file: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    mode: str | None,
    namespace: str | None,
    rules_files: tuple[Path, ...],
    packs: tuple[str, ...],
    failure_policy: str | None,
    timeout_seconds: int | None,
    webhook_url: str | None,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    verbose: bool,
) -> None:
    """Run the admission controller (the kopf operator) until SIGTERM/SIGINT."""
    import asyncio

    from gatewatch.config import load_settings
    from gatewatch.controller import Operator
    from gatewatch.kube.client import build_api_client

    _configure_logging(verbose)
    overrides: dict[str, Any] = {
        "mode": mode,
        "namespace": namespace,
        "webhook.failurePolicy": failure_policy,
        "webhook.timeoutSeconds": timeout_seconds,
        "webhook.url": webhook_url,
        "server.host": host,
        "server.port": port,
        "server.metricsPort": metrics_port,
    }
    try:
        settings = with_extra_rules(load_settings(config_file=config_file, overrides=overrides), rules_files, packs)
        api_client = build_api_client(kubeconfig=kubeconfig, context=context)
        asyncio.run(Operator(settings, api_client=api_client).run())
    except GatewatchError as error:
        click.echo(f"gatewatch: {error}", err=True)
        sys.exit(EXIT_BAD_SETUP)
    except KeyboardInterrupt:
        pass


@click.command("uninstall-webhook")
@_config_option
@_kubeconfig_option
@_context_option
@click.option("--name", help="ValidatingWebhookConfiguration name (default: webhook.configurationName).")
def uninstall_webhook(
    config_file: Path | None, kubeconfig: Path | None, context: str | None, name: str | None
) -> None:
    """Delete gatewatch's ValidatingWebhookConfiguration (e.g. before uninstalling, or to recover).

    Without it the API server stops calling gatewatch at once, whatever the
    failurePolicy; gatewatch registers it again when it next starts.
    """
    import asyncio

    from gatewatch.config import load_settings
    from gatewatch.kube.webhook_configuration import delete_webhook_configuration
    from gatewatch.kube.client import build_api_client

    try:
        settings = load_settings(config_file=config_file)
        name = name or settings.webhook.configuration_name
        api_client = build_api_client(kubeconfig=kubeconfig, context=context)
        deleted = asyncio.run(delete_webhook_configuration(api_client, name=name))
    except GatewatchError as error:
        click.echo(f"gatewatch: {error}", err=True)
        sys.exit(EXIT_BAD_SETUP)
    if deleted:
        click.echo(f"deleted ValidatingWebhookConfiguration {name}")
    else:
        click.echo(f"no ValidatingWebhookConfiguration {name}: nothing to delete")


def with_extra_rules(settings: Settings, rules_files: tuple[Path, ...], packs: tuple[str, ...] = ()) -> Settings:
    """``--rules`` files appended to ``rules.files``, ``--pack`` packs to ``rules.packs`` (a pack
    already there takes the action given here). Raises ConfigError for an unknown pack or action."""
    from gatewatch.config import PackSetting
    from gatewatch.errors import ConfigError
    from gatewatch.rules.packs import PackSelection, pack_path

    if not rules_files and not packs:
        return settings
    selected = {pack.name: pack for pack in settings.rules.packs}
    for text in packs:
        try:
            selection = PackSelection.parse(text)
            pack_path(selection.name)
        except GatewatchError as error:
            raise ConfigError(str(error), source="--pack") from None
        selected[selection.name] = PackSetting(name=selection.name, action=selection.action)
    rules = settings.rules.model_copy(
        update={"files": (*settings.rules.files, *rules_files), "packs": tuple(selected.values())}
    )
    return settings.model_copy(update={"rules": rules})


def _configure_logging(verbose: bool) -> None:
    from gatewatch.logs import BoundedFormatter

    # Logs to stderr; stdout carries the alert lines only. Every line is bounded (gatewatch.logs).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(BoundedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if not verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
