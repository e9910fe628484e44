"""EQL sequences: ordered steps over many events, joined by key, within maxspan.

``compile_sequence`` turns a translated ``sequence`` query
(``gatewatch.rules.eql.EqlSequence``) into a ``CompiledSequence``: each step's
condition compiled by the KQL compiler, as any single-event rule's, so a step
reads the same document with the same field semantics. ``observe`` says what
one document is to the sequence (which steps and ``until`` it matches, and its
join key for each); a ``SequenceMatcher`` is fed those observations in event
time order and gives each completed sequence.

The matching is the one of Elastic's reference EQL engine (the ``eql``
package's ``PythonEngine``, the differential test's referee), which for events
in time order is also Elasticsearch's (its SequenceMatcher takes on the latest
partial sequence before an event and drops the older ones):

- each step matches a distinct event; events come in timestamp order (ties:
  in the order given, replay gives line order);
- join keys as Elasticsearch reads them (elastic/elasticsearch#79677,
  #89965; the reference engine differs here): an event whose join field is
  absent takes no part in the step, unless the field is optional
  (``?field``), whose null joins with null; a multi-valued field gives one
  key per value (several: their cartesian product), each joined on its own;
- per join key there is at most one partial sequence waiting at each step: an
  event matching step 1 starts a new one for its key (replacing a waiting one
  that has not gone further); an event matching step ``i`` takes the partial
  of its key waiting at step ``i`` to step ``i + 1``, replacing the one there;
  one event may do both (advance one partial and start another), never take a
  partial two steps at once;
- ``maxspan``: the last event is at most ``maxspan`` after the first
  (inclusive); an older partial is dropped;
- ``until``: an event matching it drops every partial of its key, before it
  can itself start or advance one.

Memory is bounded: at most ``max_pending`` partial sequences per rule. Beyond
that the one moved longest ago is evicted and counted (``evicted``); expired
ones are swept first.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from gatewatch.kql import CompiledQuery, compile_query
from gatewatch.kql.ast import Node, Or
from gatewatch.kql.fields import compile_path

if TYPE_CHECKING:
    from gatewatch.rules.eql import EqlSequence

Key = tuple[Any, ...]
DEFAULT_MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class Observation:
    """What one event is to a sequence: the steps it matches, its join key for each, ``until``."""

    at: datetime
    item: Any  # what a completed sequence gives back for this event (replay: the line and document)
    steps: tuple[int, ...]  # indexes of the steps it matches
    keys: tuple[tuple[Key, ...], ...]  # per step: its join keys (none where the step does not match)
    until_keys: tuple[Key, ...] = ()  # its join keys for ``until``, when it matches ``until``


class CompiledSequence:
    """A compiled ``sequence`` query. Called with one document it is False: a
    sequence spans many events, so only ``observe`` and a ``SequenceMatcher`` match it.

    ``requirement`` (any step, or ``until``) is what the rule index reads, so
    every document a step could match is built; ``fields`` are the fields the
    steps and join keys read. ``keys`` name the join fields without the ``?``
    of an optional one.
    """

    is_sequence = True
    aggregates = False  # not an ES|QL STATS query

    __slots__ = ("query", "steps", "keys", "maxspan", "until", "until_keys", "fields", "requirement", "_key_paths",
                 "_until_key_paths")

    def __init__(self, *, query: str, steps: Sequence[CompiledQuery], keys: Sequence[tuple[str, ...]],
                 maxspan: timedelta | None, until: CompiledQuery | None, until_keys: tuple[str, ...]) -> None:
        self.query = query
        self.steps = tuple(steps)
        self.keys = tuple(tuple(name.lstrip("?") for name in names) for names in keys)
        self.maxspan = maxspan
        self.until = until
        self.until_keys = tuple(name.lstrip("?") for name in until_keys)
        conditions = [step.node for step in self.steps] + ([until.node] if until is not None else [])
        self.requirement: Node = conditions[0] if len(conditions) == 1 else Or(tuple(conditions))
        fields = set().union(*(step.fields for step in self.steps), *self.keys, self.until_keys)
        if until is not None:
            fields |= until.fields
        self.fields = frozenset(fields)
        self._key_paths = tuple(_key_paths(names) for names in keys)
        self._until_key_paths = _key_paths(until_keys)

    def __call__(self, document: Mapping[str, Any]) -> bool:
        return False

    def __repr__(self) -> str:
        return f"CompiledSequence({self.query!r})"

    def observe(self, document: Mapping[str, Any], *, at: datetime, item: Any) -> Observation | None:
        """The document as an observation; None when it matches no step and not ``until``."""
        keys = tuple(_keys(self._key_paths[index], document) if step(document) else ()
                     for index, step in enumerate(self.steps))
        until_keys = _keys(self._until_key_paths, document) if self.until is not None and self.until(document) else ()
        steps = tuple(index for index, step_keys in enumerate(keys) if step_keys)
        if not steps and not until_keys:
            return None
        return Observation(at=at, item=item, steps=steps, keys=keys, until_keys=until_keys)


def compile_sequence(sequence: EqlSequence, *, source: str) -> CompiledSequence:
    """Compile each condition of a translated ``sequence`` (``source``: the EQL text)."""
    return CompiledSequence(
        query=source,
        steps=[compile_query(step) for step in sequence.steps],
        keys=sequence.keys,
        maxspan=sequence.maxspan,
        until=compile_query(sequence.until) if sequence.until is not None else None,
        until_keys=sequence.until_keys,
    )


_KeyPath = tuple[Callable[[Any], list[Any]], bool]  # the field's resolver, and whether it is optional


def _key_paths(names: Sequence[str]) -> tuple[_KeyPath, ...]:
    return tuple((compile_path(name.lstrip("?")), name.startswith("?")) for name in names)


def _keys(paths: tuple[_KeyPath, ...], document: Mapping[str, Any]) -> tuple[Key, ...]:
    """The event's join keys: one per combination of the fields' values (Elasticsearch
    joins each value of a multi-valued field on its own); none when a field that is not
    optional is absent (Elasticsearch filters those events out), an optional one's null."""
    keys: list[Key] = [()]
    for resolve, optional in paths:
        values = list(dict.fromkeys(_hashable(value) for value in resolve(document) if value is not None))
        if not values:
            if not optional:
                return ()
            values = [None]
        keys = [key + (value,) for key in keys for value in values]
    return tuple(keys)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else repr(value)


@dataclass(slots=True)
class _Partial:
    start: datetime
    items: list[Any]


@dataclass(frozen=True, slots=True)
class Completed:
    """A completed sequence: its join key (of the last step) and its events' items, in step order."""

    key: Key
    items: tuple[Any, ...]


@dataclass
class SequenceMatcher:
    """Partial sequences of one rule, fed observations in event time order."""

    sequence: CompiledSequence
    max_pending: int = DEFAULT_MAX_PENDING
    evicted: int = 0
    expired: int = 0
    # (step waited for, key) -> partial; insertion order is the order partials last moved.
    _pending: dict[tuple[int, Key], _Partial] = field(default_factory=dict)
    _moves_since_sweep: int = DEFAULT_MAX_PENDING  # the first time over the cap sweeps at once

    @property
    def pending(self) -> int:
        return len(self._pending)

    def feed(self, observation: Observation) -> list[Completed]:
        """The sequences ``observation`` completes (at most one per step it matches)."""
        at = observation.at
        pending = self._pending
        last = len(self.sequence.steps) - 1
        for until_key in observation.until_keys:
            for waiting in range(1, last + 1):
                pending.pop((waiting, until_key), None)
        completed: list[Completed] = []
        # Last step first, so that one event never takes a partial two steps at once.
        for step, key in ((step, key) for step in reversed(observation.steps) for key in observation.keys[step]):
            if step == 0:
                partial = _Partial(start=at, items=[observation.item])
            else:
                partial = pending.pop((step, key), None)
                if partial is None:
                    continue
                if self._expired(partial, at):
                    self.expired += 1
                    continue
                partial.items.append(observation.item)
            if step == last:
                completed.append(Completed(key=key, items=tuple(partial.items)))
            else:
                self._put((step + 1, key), partial, at)
        return completed

    def _expired(self, partial: _Partial, at: datetime) -> bool:
        maxspan = self.sequence.maxspan
        return maxspan is not None and at - partial.start > maxspan

    def _put(self, slot: tuple[int, Key], partial: _Partial, at: datetime) -> None:
        pending = self._pending
        pending.pop(slot, None)  # replaced, and moved to the end of the order
        pending[slot] = partial
        self._moves_since_sweep += 1
        if len(pending) <= self.max_pending:
            return
        # A sweep reads every partial: at most once per tenth of the cap, so its cost is bounded per event.
        if self.sequence.maxspan is not None and self._moves_since_sweep * 10 >= self.max_pending:
            self._moves_since_sweep = 0
            for old in [s for s, p in pending.items() if self._expired(p, at)]:
                del pending[old]
                self.expired += 1
        while len(pending) > self.max_pending:
            del pending[next(iter(pending))]
            self.evicted += 1


def match_sequences(sequence: CompiledSequence, observations: Sequence[Observation], *,
                    max_pending: int = DEFAULT_MAX_PENDING) -> tuple[list[Completed], SequenceMatcher]:
    """Every sequence the observations complete, fed in event time order (a tie: the order given)."""
    matcher = SequenceMatcher(sequence, max_pending=max_pending)
    completed: list[Completed] = []
    for observation in sorted(observations, key=lambda o: o.at):  # sorted() is stable: ties keep their order
        completed.extend(matcher.feed(observation))
    return completed, matcher
