"""docs/operations.md's table of background tasks is the one gatewatch.background builds."""
from __future__ import annotations

import re
from pathlib import Path

from gatewatch import background
from gatewatch.alert_sinks import HttpAlertSink, StdoutAlertSink
from gatewatch.metrics import LABEL_VALUES

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


class _Stub:
    """Just enough of a component for ``gatewatch.background`` to name its task."""

    name = "gatewatch"
    namespace = "gatewatch"
    interval = flush_interval = 10.0
    cert_file = "/etc/gatewatch/tls/tls.crt"

    async def reconcile_once(self) -> None: ...
    async def reload_once(self) -> None: ...
    async def cycle(self) -> None: ...
    async def flush(self) -> None: ...
    async def ensure(self) -> None: ...


def test_every_task_label_and_its_stall_deadline_are_documented() -> None:
    stub = _Stub()
    tasks = [
        background.drift_repair(stub),  # type: ignore[arg-type]
        background.certificate_check(stub),  # type: ignore[arg-type]
        background.rules_reload(stub),  # type: ignore[arg-type]
        background.event_writer(stub),  # type: ignore[arg-type]
        background.alert_delivery(StdoutAlertSink()),
        background.new_terms_flush(stub),  # type: ignore[arg-type]
    ]
    text = OPERATIONS.read_text()
    rows = {match[0]: match[1] for match in re.findall(r"^\| `([a-z-]+)` \|.*\| ([^|]+) \|$", text, re.MULTILINE)}
    for task in tasks:
        assert rows[task.name].strip().split(" (")[0] == f"{task.stall_deadline:g} s", task.name
    http = background.alert_delivery(HttpAlertSink("https://siem.example/in", request_timeout=10, flush_interval=2))
    assert http.stall_deadline == 2 * (2 * 10 + 2 + 60)
    assert "alerts-http" in rows
    # The task label's values (exported at 0 from the start) are exactly the operator's tasks.
    assert {task.name for task in tasks} | {http.name} == LABEL_VALUES["task"]
