"""The README's "Try it" command prints what the README says it prints.

A user's first contact with gatewatch is pasting that command; the sample
output below it drifted once already (a line the table gained was missing).
The command is read from the README, run as the installed console script
would run it (``python -m gatewatch`` in this environment), and its output and
exit status compared with the README's block, line for line.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def try_it_section() -> tuple[list[str], list[str]]:
    """The ``gatewatch check`` arguments of the README's command, and its sample output's lines."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    command, output = re.findall(r"```(?:sh)?\n(.*?)```", section, flags=re.DOTALL)[:2]
    arguments = re.search(r"\.venv/bin/gatewatch (check [^;]+);", command)
    assert arguments, f"no gatewatch check command in the README's Try it block: {command!r}"
    return arguments.group(1).split(), output.rstrip("\n").splitlines()


def test_the_readme_try_it_command_prints_its_sample_output() -> None:
    arguments, expected = try_it_section()
    # No ``timeout=``: pytest-timeout bounds it (see tests/test_cli_offline.py: Popen's timed wait
    # fails under the date check's libfaketime).
    finished = subprocess.run([sys.executable, "-m", "gatewatch", *arguments], cwd=REPO,
                              capture_output=True, text=True)
    shown = (finished.stdout + finished.stderr).rstrip("\n").splitlines() + [f"exit status: {finished.returncode}"]
    assert shown == expected
