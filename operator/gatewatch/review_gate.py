"""A weighted admission gate for work in flight: first come, first served, a bounded line.

The webhook server holds a review's body bytes, and then its parsed JSON
values, through one of these, so that what is in memory at once has a bound
whatever the traffic. A holder takes ``weight`` units (and one of
``max_holders`` places); when they are not free, the caller waits in line,
strictly in arrival order, so a large review is never starved by small ones.
A full line refuses at once (``GateFull``: the server answers 429); how long a
caller may wait is the caller's deadline (``asyncio.timeout`` around ``hold``).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator


class GateFull(Exception):
    """The line is full: refused without waiting."""


@dataclass(eq=False)
class _Waiter:
    weight: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class WeightedGate:
    """At most ``capacity`` units and ``max_holders`` holders at once; at most ``max_waiters`` in line."""

    def __init__(self, *, capacity: int, max_holders: int | None = None, max_waiters: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_holders = max_holders
        self.max_waiters = max_waiters
        self.used = 0
        self.holders = 0
        self._line: collections.deque[_Waiter] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    @contextlib.asynccontextmanager
    async def hold(self, weight: int) -> AsyncIterator[None]:
        """Hold ``weight`` units (at most the capacity) for the ``async with`` block."""
        weight = self.clamp(weight)
        if not self.try_take(weight):
            await self.take(weight)
        try:
            yield
        finally:
            self.give_back(weight)

    def clamp(self, weight: int) -> int:
        """What ``weight`` counts as: never more than the capacity, so one holder always fits alone."""
        return max(0, min(weight, self.capacity))

    def try_take(self, weight: int) -> bool:
        """Take ``weight`` (``clamp`` it first) now if nobody waits and it fits: the usual case."""
        if self._line or not self._fits(weight):
            return False
        self._take(weight)
        return True

    async def take(self, weight: int) -> None:
        """Wait in line for ``weight`` (``clamp`` it first); GateFull when the line is full. ``give_back`` after."""
        if self.try_take(weight):
            return
        if len(self._line) >= self.max_waiters:
            raise GateFull(f"{len(self._line)} already waiting")
        waiter = _Waiter(weight)
        self._line.append(waiter)
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.give_back(weight)  # granted just as the wait was given up: hand it on
            else:
                if waiter in self._line:  # _wake may have dropped it already
                    self._line.remove(waiter)
                self._wake()  # a large waiter leaving the head may let smaller ones in
            raise

    def give_back(self, weight: int) -> None:
        self.used -= weight
        self.holders -= 1
        self._wake()

    def _fits(self, weight: int) -> bool:
        holders_free = self.max_holders is None or self.holders < self.max_holders
        return holders_free and self.used + weight <= self.capacity

    def _take(self, weight: int) -> None:
        self.used += weight
        self.holders += 1

    def _wake(self) -> None:
        # Strictly in order: the head waits for room even if a later, smaller waiter would fit.
        while self._line and self._fits(self._line[0].weight):
            waiter = self._line.popleft()
            if waiter.granted.done():  # cancelled, being removed
                continue
            self._take(waiter.weight)
            waiter.granted.set_result(None)


__all__ = ["GateFull", "WeightedGate"]
