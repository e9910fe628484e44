"""The supervisor that keeps gatewatch's background tasks alive, with an injected clock and sleep.

What a user would notice: a task never stops for good whatever it raises, it waits
longer and longer between failed attempts (never hammering a failing server), the
log says so without flooding, the metrics say when it last worked, and a task
that stops turning makes the liveness probe fail.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
import urllib3.exceptions

from gatewatch.metrics import HealthServer, Metrics, Readiness
from gatewatch.supervisor import Backoff, SupervisedTask, Supervisor
from supervision import QuickSleep, eventually, supervised


class Script:
    """A cycle that raises the given exceptions in turn, then succeeds."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


def task(cycle: Any, **options: Any) -> SupervisedTask:
    options.setdefault("interval", 10.0)
    options.setdefault("backoff", Backoff(initial=1.0, maximum=8.0))
    return SupervisedTask(name="drift", cycle=cycle, description="test task", **options)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


MAX_RETRY = urllib3.exceptions.MaxRetryError(None, "/apis/admissionregistration.k8s.io/v1", "Connection refused")


async def test_any_exception_is_retried_with_a_growing_backoff_and_never_ends_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gatewatch")
    script = Script(MAX_RETRY, RuntimeError("a bug"), RecursionError(), OSError("broken pipe"), MAX_RETRY, None)
    metrics = Metrics()
    sleep = QuickSleep()
    wall = iter(range(1_000_000, 2_000_000))
    supervisor = Supervisor(metrics=metrics, sleep=sleep, jitter=lambda low, high: high,
                            wall_clock=lambda: float(next(wall)))
    state = supervisor.start(task(script))
    try:
        await eventually(lambda: state.successes >= 2, what="two successes")
    finally:
        await supervisor.stop()

    assert script.calls >= 7
    # 5 failures: 1, 2, 4, 8, 8 s (capped); then the interval after each success.
    assert sleep.pauses[:7] == [1, 2, 4, 8, 8, 10, 10]
    assert sample(metrics, "gatewatch_task_failures_total", task="drift") == 5
    assert sample(metrics, "gatewatch_task_last_success_timestamp_seconds", task="drift") == state.last_success
    assert state.last_success is not None and state.last_success >= 1_000_000
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("test task failed, retrying in 1.0s: MaxRetryError:")
    assert messages[1].startswith("test task failed (2 attempts in a row), retrying in 2.0s: RuntimeError: a bug")
    assert messages[2].startswith("test task failed (4 attempts in a row), retrying in 8.0s: OSError: broken pipe")
    assert messages[3].startswith("test task works again after 5 failed attempt(s)")
    assert len(messages) == 4  # the 3rd and 5th failures only at DEBUG
    # A traceback only for the first failure of a streak, and only if it is not an outage's.
    assert [record.exc_info is not None for record in caplog.records] == [False, False, False, False]


async def test_an_unexpected_exception_is_logged_with_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(KeyError("missing"), KeyError("missing"))
    async with supervised(task(script)) as supervisor:
        await eventually(lambda: supervisor.tasks["drift"].successes == 1)
    assert [record.exc_info is not None for record in caplog.records] == [True, False]
    assert "KeyError: 'missing'" in caplog.records[0].getMessage()


async def test_a_cycle_longer_than_its_timeout_is_cancelled_counted_and_the_next_one_runs() -> None:
    cancelled = asyncio.Event()
    calls = 0

    async def hangs_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            try:
                await asyncio.Event().wait()  # a blackholed server with no request timeout
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with supervised(task(hangs_once, timeout=0.05)) as supervisor:
        state = supervisor.tasks["drift"]
        await eventually(lambda: state.successes == 1)
    assert cancelled.is_set() and state.failures == 1
    assert state.last_error is None  # cleared by the success


async def test_a_failed_first_cycle_can_be_delayed_by_the_interval() -> None:
    sleep = QuickSleep()
    script = Script()
    async with supervised(task(script, first_after_interval=True, interval=30.0), sleep=sleep):
        await eventually(lambda: script.calls >= 1)
    assert sleep.pauses[0] == 30.0


async def test_the_error_text_in_a_log_line_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    async with supervised(task(Script(OSError("x" * 100_000)))) as supervisor:
        await eventually(lambda: supervisor.tasks["drift"].successes == 1)
    assert len(caplog.records[0].getMessage()) < 700


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_task_that_stops_turning_fails_liveness_and_names_itself() -> None:
    """A cycle that swallows its cancellation never finishes: only liveness can catch it."""
    clock = Clock()
    release = asyncio.Event()

    async def wedged() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a bug: ignores the timeout's cancellation

    wedged_task = SupervisedTask(name="certificates", cycle=wedged, description="wedged", interval=60.0,
                                 timeout=30.0, backoff=Backoff(initial=1.0, maximum=60.0))
    healthy_task = task(Script(), interval=10.0)
    supervisor = Supervisor(monotonic=clock, sleep=QuickSleep())
    supervisor.start(wedged_task)
    healthy = supervisor.start(healthy_task)
    try:
        await eventually(lambda: healthy.successes >= 1)
        assert wedged_task.stall_deadline == 2 * (30 + 60)
        clock.now += 179
        healthy.last_finished = clock.now  # the healthy task keeps turning
        assert supervisor.problems() == []
        clock.now += 2
        healthy.last_finished = clock.now
        assert supervisor.problems() == ["task certificates has not finished a cycle for 181s (deadline 180s)"]

        metrics = Metrics()
        server = HealthServer(metrics=metrics, readiness=Readiness(rules_loaded=True, webhook_serving=True),
                              host="127.0.0.1", port=0, liveness=supervisor.problems)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("/livez", "/healthz"):
                    async with session.get(f"http://127.0.0.1:{server.port}{path}") as response:
                        assert response.status == 503
                        assert "task certificates has not finished a cycle" in await response.text()
                async with session.get(f"http://127.0.0.1:{server.port}/readyz") as response:
                    assert response.status == 200  # readiness never depends on background tasks
                release.set()  # the wedge ends: the task finishes a cycle and is live again
                await eventually(lambda: supervisor.problems() == [])
                async with session.get(f"http://127.0.0.1:{server.port}/livez") as response:
                    assert response.status == 200 and await response.text() == "ok\n"
        finally:
            await server.stop()
    finally:
        release.set()
        await supervisor.stop()


async def test_a_runner_that_ended_is_a_liveness_problem_but_not_once_stopping() -> None:
    supervisor = Supervisor(sleep=QuickSleep())
    state = supervisor.start(task(Script()))
    await eventually(lambda: state.successes >= 1)
    assert state.runner is not None
    state.runner.cancel()  # as if the loop itself had died
    await asyncio.gather(state.runner, return_exceptions=True)
    assert supervisor.problems() == ["task drift is not running"]
    await supervisor.stop()
    assert supervisor.problems() == []


async def test_stop_ends_a_cycle_under_way_and_names_are_unique() -> None:
    started = asyncio.Event()

    async def long_cycle() -> None:
        started.set()
        await asyncio.sleep(3600)

    supervisor = Supervisor(sleep=QuickSleep())
    state = supervisor.start(task(long_cycle, timeout=7200))
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start(task(long_cycle))
    await started.wait()
    await asyncio.wait_for(supervisor.stop(), timeout=10)
    assert state.runner is not None and state.runner.done()


def test_backoff_is_equal_jitter_between_half_and_all_of_the_doubling_ceiling() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    assert [backoff.delay(n, jitter=lambda low, high: high) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert [backoff.delay(n, jitter=lambda low, high: low) for n in (1, 4, 9)] == [0.25, 2, 15]

