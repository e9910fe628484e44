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


def test_every_task_is_documented_with_its_interval_backoff_and_stall_deadline() -> None:
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
    # | `task` | one cycle | after a success | after a failure (backoff) | stalled after |
    rows = {cells[0].strip(" `"): [cell.strip() for cell in cells[1:]]
            for cells in (line.strip("|").split("|") for line in text.splitlines()
                          if re.match(r"^\| `[a-z-]+` \|", line)) if len(cells) == 5}
    for task in tasks:
        _, after_success, backoff, stalled = rows[task.name]
        if task.name != "rules-reloader":  # documented as its setting
            expected = "at once" if task.interval == 0 else f"{task.interval:g} s"
            assert after_success.startswith(expected), task.name
        assert backoff.startswith(f"{task.backoff.initial:g} s doubling to {task.backoff.maximum:g} s"), task.name
        assert stalled.split(" (")[0] == f"{task.stall_deadline:g} s", task.name
    http = background.alert_delivery(HttpAlertSink("https://siem.example/in", request_timeout=10, flush_interval=2))
    assert http.stall_deadline == 2 * (2 * 10 + 2 + 60)  # the formula the table gives
    assert rows["alerts-http"][2].startswith("0.5 s doubling to 30 s")
    # The task label's values (exported at 0 from the start) are exactly the operator's tasks.
    assert {task.name for task in tasks} | {http.name} == LABEL_VALUES["task"]
