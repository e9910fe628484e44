"""The whole operator through an API outage: the issue's reproduction, turned into a test.

Before: after the API server refused connections for 12 s, drift repair and
certificate renewal had stopped for good, without a log line, while /readyz
said ready. Now every background task fails, logs, backs off and works again
once the API server is back, and the metrics say when each last succeeded.
The outage is counted in failed cycles, and the supervisor's pauses are capped
at 50 ms (``task_sleep``), so the test does not depend on the machine's speed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from kube_emulator import VALIDATING_WEBHOOK_CONFIGURATIONS, delete_object
from supervision import closed_port
from test_operator_admission import create_pod, eventually, running_cluster, sample, webhook_configuration

API_TASKS = ("webhook-configuration", "certificates", "new-terms")
ALL_TASKS = (*API_TASKS, "rules-reloader", "events", "alerts-stdout")


async def capped_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.05))


async def probe(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status


async def test_after_the_api_server_refused_connections_every_task_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewatch")
    certificates = {"mode": "self-managed", "secretName": "gatewatch-tls", "workDir": str(tmp_path / "work")}
    async with running_cluster(tmp_path, certificates=certificates,
                               operator_options={"task_sleep": capped_sleep}) as cluster:
        operator = cluster.operator
        tasks = operator.supervisor.tasks
        await eventually(lambda: all(name in tasks and tasks[name].successes for name in API_TASKS),
                         what="every API task working")
        api = operator.api_client.configuration
        healthy_host = api.host
        api.host = f"http://127.0.0.1:{closed_port()}"  # the API server refuses connections
        try:
            await eventually(lambda: all(tasks[name].streak >= 3 for name in API_TASKS), timeout=30,
                             what="three failed cycles of each API task")
            # Still answering reviews, still live and ready: a replica that cannot reach the API
            # server evaluates with what it has (docs/operations.md: readiness never depends on it).
            result = await cluster.harness().admit(create_pod("during", "busybox", namespace="warn-ns"))
            assert result.allowed and result.warnings and not result.failures
            assert await probe(operator.metrics_port, "/livez") == 200
            assert await probe(operator.metrics_port, "/readyz") == 200
            assert all(not tasks[name].runner.done() for name in ALL_TASKS)
        finally:
            api.host = healthy_host

        back = time.time()
        delete_object(cluster.k8s, VALIDATING_WEBHOOK_CONFIGURATIONS, None, "gatewatch")  # drift, after the outage
        await eventually(lambda: webhook_configuration(cluster), what="the configuration restored")
        await cluster.harness().admit(create_pod("after", "busybox", namespace="warn-ns"))  # an Event to write
        await eventually(lambda: all(tasks[name].streak == 0 and tasks[name].last_success
                                     and tasks[name].last_success >= back for name in (*API_TASKS, "events")),
                         timeout=30, what="every task working again")
        for name in ALL_TASKS:
            assert sample(cluster, "gatewatch_task_last_success_timestamp_seconds", task=name) is not None, name
        for name in API_TASKS:
            assert sample(cluster, "gatewatch_task_failures_total", task=name) >= 3
            assert sample(cluster, "gatewatch_task_last_success_timestamp_seconds", task=name) >= back
        assert operator.supervisor.problems() == []

    for name in API_TASKS:
        description = tasks[name].task.description
        assert f"{description} failed, retrying in" in caplog.text
        assert f"{description} works again after" in caplog.text
    assert "certificate check (secret gatewatch/gatewatch-tls; the current certificate stays)" in caplog.text
    assert "webhook_configuration_drift" in caplog.text
