"""Every webhook call's deadline on one timer.

``asyncio.timeout_at`` arms a timer per call: about 5 us of the event loop's
time for each review (the task lookup, a timer handle pushed on the loop's heap,
then cancelled), as much as checking the review. The calls a server answers
all have about the same deadline and nearly all end long before it, so one
timer does for all of them: it is set for the earliest deadline watched, and
when it fires it cancels the calls that are past theirs and is set again for
the earliest left. A call that ends first only leaves the watch.

The meaning is ``asyncio.timeout_at``'s: inside ``with deadlines.watch(at)``,
passing ``at`` cancels the task, and the block raises ``TimeoutError``; a
cancellation from elsewhere stays a ``CancelledError``.
"""
from __future__ import annotations

import asyncio
from types import TracebackType


class CallDeadlines:
    """The deadlines of the calls under way on one event loop, on one timer."""

    def __init__(self) -> None:
        self._watched: set[_Watch] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, deadline: float) -> "_Watch":
        """A context for the current task that raises ``TimeoutError`` once loop time ``deadline`` has passed."""
        return _Watch(self, deadline)

    def __len__(self) -> int:
        return len(self._watched)

    def _add(self, watch: "_Watch") -> None:
        self._watched.add(watch)
        timer = self._timer
        if timer is None or watch.deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(watch.deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for watch in self._watched:
            if watch.expired:
                continue
            if watch.deadline <= now:
                watch.expired = True
                watch.task.cancel()
            elif earliest is None or watch.deadline < earliest:
                earliest = watch.deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._expire)


class _Watch:
    """One call's deadline, while its block runs (``asyncio.Timeout``'s steps on exit)."""

    __slots__ = ("_deadlines", "deadline", "task", "expired", "_cancelling")

    def __init__(self, deadlines: CallDeadlines, deadline: float) -> None:
        self._deadlines = deadlines
        self.deadline = deadline
        self.expired = False

    def __enter__(self) -> "_Watch":
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("CallDeadlines.watch is entered from a task: the task is what the deadline cancels")
        self.task = task
        self._cancelling = task.cancelling()
        self._deadlines._add(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._deadlines._watched.remove(self)
        # The cancellation this deadline caused, and no other, becomes TimeoutError (as asyncio.Timeout does).
        if self.expired and exc_type is asyncio.CancelledError and self.task.uncancel() <= self._cancelling:
            raise TimeoutError from exc


__all__ = ["CallDeadlines"]
