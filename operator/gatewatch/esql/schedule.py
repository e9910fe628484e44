"""A STATS query run as Elastic's rule scheduler runs it, over events read once.

Elastic runs a detection rule every ``interval`` over the events of the last
``lookback`` (its ``from``, ``now-6m`` by default, a little more than the
interval so that no event falls between two runs). Here the runs are the
instants ``T`` that are multiples of ``interval`` (since the Unix epoch); the
run at ``T`` aggregates the events whose @timestamp lies in ``[T - lookback, T]``
and evaluates the commands after STATS with ``NOW()`` = ``T``. Events are read
once, in any order: the per-event commands run on each document as it comes,
and only what STATS needs of each row is kept (``aggregate.project``), so
memory grows with the rows that reach STATS, not with the log.

Runs whose window holds no event are skipped (a STATS without BY would give a
row of zero counts there; Elastic would run it). Overlapping windows can give
the same result in two consecutive runs, each reported with its window.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gatewatch.esql.aggregate import _columns, _Item, _plan, aggregate_items, project
from gatewatch.esql.compiler import CompiledEsql, Row, _Refusal, refusal_error
from gatewatch.esql.values import Value, parse_date

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class StatsResult:
    """One row a run produced: the run's window and the row's columns."""

    start: datetime
    end: datetime
    columns: dict[str, Value]
    rows_in_window: int


class ScheduledStats:
    """Collects the rows of one STATS query's per-event commands, then runs its schedule."""

    def __init__(self, compiled: CompiledEsql, *, interval: timedelta, lookback: timedelta) -> None:
        if interval <= timedelta(0) or lookback <= timedelta(0):
            raise ValueError("interval and lookback must be positive")
        try:
            self._plan = _plan(compiled.ast)
        except _Refusal as refusal:
            raise refusal_error(compiled.query, refusal) from None
        self.interval = interval
        self.lookback = lookback
        self._items: list[tuple[datetime, int, _Item]] = []
        self.undated = 0  # documents without a usable @timestamp: no window holds them

    def add(self, document: Mapping[str, Any]) -> int:
        """Run the per-event commands on ``document``; returns how many rows reach STATS."""
        stamp = document.get("@timestamp")
        at = parse_date(stamp) if isinstance(stamp, str) else None
        if at is None:
            self.undated += 1
            return 0
        rows = self._plan.before.run([Row(document, {}, at)])
        for row in rows:
            self._items.append((at, len(self._items), project(self._plan, row)))
        return len(rows)

    def results(self) -> Iterator[StatsResult]:
        """Every run that has events in its window, in time order, and the rows it gives."""
        if not self._items:
            return
        items = sorted(self._items, key=lambda item: (item[0], item[1]))
        times = [item[0] for item in items]
        run = self._first_run_at_or_after(times[0])
        last = times[-1]
        while run - self.lookback <= last:
            start = run - self.lookback
            low, high = bisect.bisect_left(times, start), bisect.bisect_right(times, run)
            if low == high:  # nothing in this window: jump to the first run that sees the next event
                run = max(run + self.interval, self._first_run_at_or_after(times[low]))
                continue
            window = [item for _, _, item in items[low:high]]
            rows = self._plan.after.run(aggregate_items(self._plan, window, now=run))
            for row in rows:
                yield StatsResult(start=start, end=run, columns=_columns(self._plan.after_compiler, row),
                                  rows_in_window=high - low)
            run += self.interval

    def _first_run_at_or_after(self, moment: datetime) -> datetime:
        steps = -((_EPOCH - moment) // self.interval)  # ceiling division
        return _EPOCH + steps * self.interval
