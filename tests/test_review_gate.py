"""The weighted gate: bounded units and holders, a bounded line served in order, nothing leaked."""
from __future__ import annotations

import asyncio

import pytest

from gatewatch.review_gate import GateFull, WeightedGate


async def hold_until(gate: WeightedGate, weight: int, release: asyncio.Event, log: list[str], name: str) -> None:
    async with gate.hold(weight):
        log.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_units_and_holders_are_bounded_and_the_line_is_served_in_order():
    gate = WeightedGate(capacity=10, max_holders=2, max_waiters=3)
    releases = {name: asyncio.Event() for name in "abcde"}
    log: list[str] = []
    tasks = {name: asyncio.create_task(hold_until(gate, weight, releases[name], log, name))
             for name, weight in zip("abcd", (6, 3, 2, 1))}
    await settle()
    assert log == ["a", "b"] and gate.used == 9 and gate.waiting == 2  # c: no third holder
    releases["a"].set()
    await settle()
    assert log == ["a", "b", "c", "d"][:3]  # c in; d waits for a holder place
    releases["b"].set()
    await settle()
    assert log == ["a", "b", "c", "d"]
    for name in "cd":
        releases[name].set()
    await asyncio.gather(*tasks.values())
    assert gate.used == 0 and gate.holders == 0 and gate.waiting == 0


async def test_a_large_waiter_is_not_overtaken_by_smaller_ones():
    gate = WeightedGate(capacity=10, max_waiters=10)
    release = {name: asyncio.Event() for name in "abc"}
    log: list[str] = []
    first = asyncio.create_task(hold_until(gate, 5, release["a"], log, "a"))
    await settle()
    large = asyncio.create_task(hold_until(gate, 10, release["b"], log, "b"))
    await settle()
    small = asyncio.create_task(hold_until(gate, 1, release["c"], log, "c"))
    await settle()
    assert log == ["a"]  # c would fit, but b is first in line
    release["a"].set()
    await settle()
    assert log == ["a", "b"]
    release["b"].set()
    release["c"].set()
    await asyncio.gather(first, large, small)
    assert log == ["a", "b", "c"]


async def test_a_full_line_refuses_at_once():
    gate = WeightedGate(capacity=1, max_waiters=1)
    release = asyncio.Event()
    log: list[str] = []
    holder = asyncio.create_task(hold_until(gate, 1, release, log, "a"))
    waiter = asyncio.create_task(hold_until(gate, 1, release, log, "b"))
    await settle()
    with pytest.raises(GateFull):
        async with gate.hold(1):
            pass
    release.set()
    await asyncio.gather(holder, waiter)


async def test_giving_up_in_line_leaves_nothing_behind():
    gate = WeightedGate(capacity=4, max_waiters=5)
    release = asyncio.Event()
    log: list[str] = []
    holder = asyncio.create_task(hold_until(gate, 4, release, log, "a"))
    await settle()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            async with gate.hold(3):
                pass
    assert gate.waiting == 0
    behind = asyncio.create_task(hold_until(gate, 1, release, log, "c"))
    release.set()
    await asyncio.gather(holder, behind)
    assert gate.used == 0 and gate.holders == 0 and log == ["a", "c"]


async def test_a_wait_given_up_just_as_it_was_granted_hands_the_room_on():
    gate = WeightedGate(capacity=1, max_waiters=5)
    log: list[str] = []
    release = asyncio.Event()
    held = gate.hold(1)
    await held.__aenter__()
    waiter = asyncio.create_task(hold_until(gate, 1, asyncio.Event(), log, "b"))
    third = asyncio.create_task(hold_until(gate, 1, release, log, "c"))
    await settle()
    await held.__aexit__(None, None, None)  # grants b at once...
    waiter.cancel()  # ...which gives up before it ran: its grant goes to c
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await settle()
    assert log == ["c"]
    release.set()
    await third
    assert gate.used == 0 and gate.holders == 0
