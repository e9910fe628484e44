"""CallDeadlines: every call's deadline on one timer, with asyncio.timeout_at's meaning."""
from __future__ import annotations

import asyncio

import pytest

from gatewatch.deadlines import CallDeadlines


async def _call(deadlines: CallDeadlines, *, after: float, takes: float) -> str:
    loop = asyncio.get_running_loop()
    try:
        with deadlines.watch(loop.time() + after):
            await asyncio.sleep(takes)
    except TimeoutError:
        return "timed out"
    return "done"


async def test_a_call_past_its_deadline_times_out_and_the_others_finish() -> None:
    deadlines = CallDeadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        _call(deadlines, after=0.05, takes=30),
        _call(deadlines, after=30, takes=0.01),
        _call(deadlines, after=0.1, takes=30),
        _call(deadlines, after=30, takes=0.2),
    )
    assert results == ["timed out", "done", "timed out", "done"]
    assert loop.time() - started < 10  # the late ones were stopped at their deadline, not when they ended
    assert len(deadlines) == 0


async def test_an_earlier_deadline_watched_later_is_kept() -> None:
    deadlines = CallDeadlines()
    loop = asyncio.get_running_loop()
    slow = asyncio.create_task(_call(deadlines, after=60, takes=60))
    await asyncio.sleep(0)  # the timer is set for the slow call's deadline first
    started = loop.time()
    assert await _call(deadlines, after=0.05, takes=60) == "timed out"
    assert loop.time() - started < 30
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_calls_after_an_expiry_still_have_deadlines() -> None:
    deadlines = CallDeadlines()
    assert await _call(deadlines, after=0.02, takes=30) == "timed out"
    assert await _call(deadlines, after=30, takes=0) == "done"
    assert await _call(deadlines, after=0.02, takes=30) == "timed out"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = CallDeadlines()
    task = asyncio.create_task(_call(deadlines, after=60, takes=60))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_a_deadline_already_past_times_out_at_the_first_wait() -> None:
    deadlines = CallDeadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        with deadlines.watch(loop.time() - 1):
            await asyncio.sleep(30)


async def test_an_error_inside_passes_through() -> None:
    deadlines = CallDeadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(KeyError):
        with deadlines.watch(loop.time() + 30):
            raise KeyError("x")
    assert len(deadlines) == 0
