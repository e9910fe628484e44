"""Background tasks that cannot die: each is a small cycle that a ``Supervisor`` runs again and again.

Every long-running job of the operator (drift repair of the webhook
configuration, certificate renewal, rule reloads, Event writing, alert
delivery, new_terms flushes) is a *cycle*: a coroutine that does one bounded
round of work and returns, or raises. For as long as the operator runs, the
supervisor

- runs the cycle again ``interval`` seconds after a success;
- catches **any** exception (gatewatch's own, urllib3's ``MaxRetryError``, a
  bug), logs it and runs the cycle again after an exponential backoff, so an
  outage of the API server or of an alert endpoint never ends a task;
- cancels a cycle that takes longer than its ``timeout`` (a blackholed API
  server) and counts it as failed;
- sets ``gatewatch_task_last_success_timestamp_seconds{task}`` after every
  success and counts ``gatewatch_task_failures_total{task}``;
- reports a task as *stalled* when it has not finished a cycle, successful or
  not, within ``stall_after`` seconds (a cycle that ignores cancellation, a
  runner that ended): ``problems()`` names it and ``/livez`` (``/healthz``)
  fails, so the kubelet restarts the container.

Only liveness, never readiness, depends on these tasks (docs/operations.md,
"Background tasks"): a task that *fails* is an outage of something else (the
API server, the alert endpoint) that a restart cannot mend; readiness failing
on every replica at once would take the webhook's endpoints away, and the
failurePolicy would answer every review instead of gatewatch. A task that has
*stopped turning* is a fault of this process, which a restart does mend.

Logging stays bounded in an outage: the first failure of a streak is a
WARNING (with a traceback if the exception is not one of the expected kinds),
then again after 2, 4, 8, ... failures; the first success after it is an INFO
line saying how long the task failed.

Clocks, sleep and jitter are injected, so tests run the real loop quickly and
deterministically.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import aiohttp
import kubernetes.client
import urllib3.exceptions

from gatewatch.errors import GatewatchError

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

Cycle = Callable[[], Awaitable[Any]]
Sleep = Callable[[float], Awaitable[Any]]
Jitter = Callable[[float, float], float]

# Failures an outage causes: logged without a traceback. Anything else is a bug worth one.
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    GatewatchError, OSError, TimeoutError, urllib3.exceptions.HTTPError,
    kubernetes.client.ApiException, aiohttp.ClientError,
)
MAX_ERROR_CHARS = 500  # an exception's text in a log line
STOP_RETRY_SECONDS = 1.0


class CycleTimedOut(GatewatchError):
    """A cycle took longer than its task's ``timeout`` and was cancelled."""


@dataclass(frozen=True)
class Backoff:
    """Pause after the n-th failure in a row: doubling from ``initial`` up to ``maximum``, equal jitter.

    Equal jitter (half fixed, half random) keeps replicas that failed together
    from retrying together, and never retries at once against a refusing server.
    """

    initial: float = 1.0
    maximum: float = 30.0

    def delay(self, failures: int, *, jitter: Jitter = random.uniform) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** max(0, failures - 1))
        return ceiling / 2 + jitter(0.0, ceiling / 2)


@dataclass(frozen=True)
class SupervisedTask:
    """One background task: what one cycle does, and how often and how long it may take."""

    name: str  # the ``task`` label value, e.g. "webhook-configuration"
    cycle: Cycle
    description: str  # for log lines: "webhook configuration drift repair"
    interval: float = 0.0  # pause after a success; 0 for a worker whose cycle waits for work itself
    timeout: float = 60.0  # a longer cycle is cancelled and counts as failed
    backoff: Backoff = field(default_factory=Backoff)
    first_after_interval: bool = False  # the caller just ran the first cycle (at start)
    stall_after: float | None = None  # None: twice the longest a healthy loop can take between two cycles

    @property
    def stall_deadline(self) -> float:
        if self.stall_after is not None:
            return self.stall_after
        return 2 * (self.timeout + max(self.interval, self.backoff.maximum))


@dataclass
class TaskState:
    """What the supervisor knows of one task; read by ``problems()`` and tests."""

    task: SupervisedTask
    started_at: float
    last_finished: float  # monotonic: a cycle ended, successful or not (or the task started)
    last_success: float | None = None  # wall clock (Unix time)
    successes: int = 0
    failures: int = 0  # in total
    failing_since: float | None = None  # monotonic, start of the current failure streak
    streak: int = 0  # failures in a row
    last_error: str | None = None
    runner: asyncio.Task[None] | None = None


class Supervisor:
    """Runs ``SupervisedTask`` cycles until ``stop()``; see the module docstring."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = random.uniform,
    ) -> None:
        self._metrics = metrics
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._jitter = jitter
        self.tasks: dict[str, TaskState] = {}
        self._stopping = False

    def start(self, task: SupervisedTask) -> TaskState:
        """Start supervising ``task`` (names are unique)."""
        if task.name in self.tasks:
            raise ValueError(f"task {task.name!r} is already supervised")
        now = self._monotonic()
        state = TaskState(task=task, started_at=now, last_finished=now)
        self.tasks[task.name] = state
        state.runner = asyncio.create_task(self._run(state), name=f"gatewatch {task.name}")
        return state

    async def stop(self) -> None:
        """Cancel every task (a cycle under way is cancelled too) and wait until they have ended."""
        self._stopping = True
        pending = {state.runner for state in self.tasks.values() if state.runner is not None}
        while pending:
            # Again until they end: Python 3.11's wait_for can swallow a cancellation that
            # arrives as its inner future completes (the runner's loop then sees _stopping).
            for runner in pending:
                runner.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_RETRY_SECONDS)

    def problems(self) -> list[str]:
        """Why the process is not live: tasks that stopped turning. Empty when all is well."""
        if self._stopping:
            return []
        now = self._monotonic()
        found = []
        for name, state in self.tasks.items():
            if state.runner is not None and state.runner.done():
                found.append(f"task {name} is not running")
                continue
            idle = now - state.last_finished
            if idle > state.task.stall_deadline:
                found.append(f"task {name} has not finished a cycle for {idle:.0f}s "
                             f"(deadline {state.task.stall_deadline:.0f}s)")
        return found

    async def _run(self, state: TaskState) -> None:
        task = state.task
        if task.first_after_interval:
            await self._sleep(task.interval)
        while not self._stopping:
            deadline = asyncio.timeout(task.timeout)
            try:
                async with deadline:
                    await task.cycle()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any: an exception must never end a background task
                if isinstance(error, TimeoutError) and deadline.expired():
                    error = CycleTimedOut(f"no result within {task.timeout:g}s (cancelled)")
                pause = self._failed(state, error)
            else:
                pause = self._succeeded(state)
            await self._sleep(pause)

    def _succeeded(self, state: TaskState) -> float:
        now = self._monotonic()
        task = state.task
        state.last_finished = now
        state.successes += 1
        state.last_success = self._wall_clock()
        if self._metrics is not None:
            self._metrics.task_succeeded(task.name, state.last_success)
        if state.streak:
            since = state.failing_since if state.failing_since is not None else now
            logger.info("%s works again after %d failed attempt(s) over %.0fs", task.description, state.streak,
                        now - since)
        state.streak, state.failing_since, state.last_error = 0, None, None
        return task.interval

    def _failed(self, state: TaskState, error: Exception) -> float:
        now = self._monotonic()
        task = state.task
        state.last_finished = now
        state.failures += 1
        state.streak += 1
        if state.failing_since is None:
            state.failing_since = now
        if self._metrics is not None:
            self._metrics.task_failed(task.name)
        text = describe_error(error)
        state.last_error = text
        pause = task.backoff.delay(state.streak, jitter=self._jitter)
        streak = state.streak
        if streak & (streak - 1) == 0:  # 1, 2, 4, 8, ...: bounded logging in a long outage
            expected = isinstance(error, EXPECTED_FAILURES)
            again = "" if streak == 1 else f" ({streak} attempts in a row)"
            logger.warning("%s failed%s, retrying in %.1fs: %s", task.description, again, pause, text,
                           exc_info=None if expected or streak > 1 else error)
        else:
            logger.debug("%s failed (%d in a row), retrying in %.1fs: %s", task.description, streak, pause, text)
        return pause


def describe_error(error: BaseException) -> str:
    """One bounded line: the exception's type and text (gatewatch's own errors need no type)."""
    text = " ".join(str(error).split())
    if not isinstance(error, GatewatchError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
