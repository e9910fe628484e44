"""The Dockerfile agrees with the Helm chart (ports, paths, user, command) and builds
a minimal image. No container engine runs here: the Dockerfile is parsed."""
from __future__ import annotations

import fnmatch
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CHART_DIR = REPO_ROOT / "charts" / "gatewatch"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; line continuations joined, comments dropped,
    ``${ARG}`` in FROM resolved from the global ARG defaults."""
    logical_lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical_lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args.split()[0])
            alias = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stages.append(Stage(base=base, name=alias.group(1) if alias else None))
        elif not stages:
            assert instruction == "ARG", f"only ARG may precede FROM, found {instruction}"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((instruction, args))
    return stages


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD must be JSON arrays: no shell in between, signals reach gatewatch."""
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed)
    return parsed


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import render_manifests
    finally:
        sys.path.pop(0)
    objects = render_manifests.render_chart(chart_dir=CHART_DIR)
    return next(o for o in objects if o["kind"] == "Deployment")


def test_parser_reads_continuations_and_stages():
    stages = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11-slim\nFROM ${BASE} AS builder\n"
        "RUN a \\\n  # note\n && b\nFROM ${BASE}\nUSER 1:1\n"
    )
    assert [(s.base, s.name) for s in stages] == [("python:3.11-slim", "builder"), ("python:3.11-slim", None)]
    assert stages[0].args_of("RUN") == ["a  && b"]


def test_multi_stage_on_the_slim_python_the_project_requires(stages):
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    assert stages[-1].base == f"python:{minimum}-slim"
    assert all(stage.base.endswith("-slim") for stage in stages)


def test_builder_makes_wheels_and_the_final_image_installs_only_those(stages, final):
    assert any("pip wheel" in run for run in stages[0].args_of("RUN"))
    installs = [run for run in final.args_of("RUN") if "pip install" in run]
    assert len(installs) == 1
    install = installs[0]
    assert "--no-index" in install and "--find-links=/wheels" in install
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install  # no wheel layer left behind
    # No compilers, package managers' installs or source copies in the final image.
    for run in final.args_of("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\s+(-\S+\s+)*install\b", run), run
        assert not re.search(r"\b(gcc|g\+\+|make|build-essential)\b", run), run
    assert final.args_of("COPY") == [] and final.args_of("ADD") == []


def test_final_image_runs_as_the_uid_and_gid_of_the_chart(final, deployment):
    pod_context = deployment["spec"]["template"]["spec"]["securityContext"]
    users = final.args_of("USER")
    assert users == [f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"]
    assert users == ["65532:65532"]
    # The user is numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert re.fullmatch(r"\d+:\d+", users[0])


def test_exposed_ports_are_the_chart_ports(final, chart_values, deployment):
    exposed = {int(port.split("/")[0]) for line in final.args_of("EXPOSE") for port in line.split()}
    container_ports = {p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert exposed == {chart_values["server"]["port"], chart_values["server"]["metricsPort"]} == container_ports


def test_entrypoint_and_command_match_the_deployment(final, deployment):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (entrypoint,) = final.args_of("ENTRYPOINT")
    (command,) = final.args_of("CMD")
    assert exec_form(entrypoint) == ["gatewatch"]
    assert exec_form(command) == container["args"] == ["run", "--config", "/etc/gatewatch/config.yaml"]
    config_mount = next(m for m in container["volumeMounts"] if m.get("subPath") == "config.yaml")
    assert exec_form(command)[2] == config_mount["mountPath"]


def test_entrypoint_is_the_installed_console_script_with_the_chart_commands(final):
    from gatewatch.cli import main

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = final.args_of("ENTRYPOINT")
    assert exec_form(entrypoint)[0] in scripts
    options = {name: {opt for param in command.params for opt in param.opts} for name, command in main.commands.items()}
    assert "--config" in options["run"]  # the Deployment's args
    assert "--name" in options["uninstall-webhook"]  # the uninstall hook's args


def test_paths_the_chart_mounts_exist_in_the_image(final, deployment):
    (run,) = [run for run in final.args_of("RUN") if "mkdir" in run]
    created = set(re.search(r"mkdir -p ([^&]+)", run).group(1).split())
    mounts = {m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    # Directory mounts under /etc/gatewatch need their parent in a read-only root filesystem.
    assert {"/etc/gatewatch/rules"} <= created
    assert {path for path in mounts if path.startswith("/etc/gatewatch/") and path.count("/") == 3
            and not path.endswith(".yaml")} <= created


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent directory wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negated
    return ignored


def test_everything_the_wheel_build_needs_is_copied_and_not_ignored(stages):
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied: list[str] = []
    for args in stages[0].args_of("COPY"):
        *sources, _destination = args.split()
        copied += [source.rstrip("/") for source in sources if not source.startswith("--")]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    source_root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"][""]
    needed = ["pyproject.toml", project["readme"], source_root]
    # Package data that links outside the package (gatewatch/data/rules.yaml -> rules.yaml).
    for link in (REPO_ROOT / source_root).rglob("*"):
        if link.is_symlink():
            needed.append(str(link.resolve().relative_to(REPO_ROOT)))
    for path in needed:
        assert path in copied, f"{path} is not copied into the builder stage"
        assert (REPO_ROOT / path).exists(), f"{path} is copied but missing from the repository"
        assert not _ignored(path, patterns), f"{path} is excluded by .dockerignore"
    assert _ignored("operator/gatewatch/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored(".venv/bin/python", patterns)


# Base images known to ship /bin/sleep (coreutils or busybox); distroless and scratch do not.
IMAGES_WITH_SLEEP = ("python:", "debian:", "ubuntu:", "alpine:")


def test_the_final_image_has_the_sleep_the_charts_pre_stop_hook_runs(final, deployment):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep"
    # python:<version>-slim is Debian with coreutils: /bin/sleep is there.
    assert final.base.startswith(IMAGES_WITH_SLEEP), f"{final.base}: does it have {command[0]}?"
