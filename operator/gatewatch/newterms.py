"""new_terms history: has this combination of values been seen within the window?

Elastic's new_terms rule alerts only when the combination of the rule's
new_terms field values was not seen in the history window before the event.
The state sits behind a small protocol. :class:`InMemoryNewTermsStore` is the
one implementation of the state (windows, expiry, the size bound): the CLI
uses it as is, the operator's ``gatewatch.kube.newterms_store`` extends it
with persistence only.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

Key = tuple[str, ...]
Snapshot = dict[str, dict[str, str]]  # rule id -> encoded key -> last seen (ISO 8601)

# Sightings held at most (between trims, twice this): a few tens of MB at worst,
# for a replay of a large audit log full of unique terms.
DEFAULT_MAX_ENTRIES = 100_000


@runtime_checkable
class NewTermsStore(Protocol):
    def is_new(
        self,
        rule_id: str,
        key: Key,
        *,
        at: datetime,
        window: timedelta,
        record: bool = True,
    ) -> bool:
        """True when ``key`` was not seen for ``rule_id`` in ``[at - window, at)``.

        With ``record`` the sighting at ``at`` is remembered (dry-run requests
        pass ``record=False``: they leave no trace).
        """
        ...

    def snapshot(self) -> Snapshot:
        """The state as JSON-friendly data: rule id -> encoded key -> last seen (ISO 8601)."""
        ...

    def restore(self, data: Snapshot) -> None:
        """Merge persisted state in, keeping the latest sighting of each key."""
        ...


# Keys are tuples of strings; stored joined by a separator that cannot appear in
# a normal field value, so a snapshot is a flat JSON object.
_SEPARATOR = "\x1f"


def encode_key(key: Key) -> str:
    return _SEPARATOR.join(key)


def decode_key(encoded: str) -> Key:
    return tuple(encoded.split(_SEPARATOR))


class InMemoryNewTermsStore:
    """Last-seen times per (rule, key), in memory, bounded. Thread-safe.

    Bounded so that a flood of unique terms cannot exhaust memory: past
    ``2 * max_entries`` sightings, those older than their rule's window are
    forgotten, then the oldest, down to ``max_entries`` (counted in
    ``evicted``). An evicted term counts as new when seen again: the bound errs
    towards alerting again, never towards silence.
    """

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.evicted = 0  # sightings dropped at the bound
        self._last_seen: dict[str, dict[Key, datetime]] = {}
        # Each rule's history window, learnt from is_new(): what expiry may drop.
        self._windows: dict[str, timedelta] = {}
        self._lock = threading.Lock()

    def is_new(
        self,
        rule_id: str,
        key: Key,
        *,
        at: datetime,
        window: timedelta,
        record: bool = True,
    ) -> bool:
        with self._lock:
            self._windows[rule_id] = window
            seen = self._last_seen.setdefault(rule_id, {})
            last = seen.get(key)
            # History is what was seen in the window up to `at`; a later sighting
            # (out-of-order input) is not history for an earlier event.
            new = last is None or not (at - window <= last <= at)
            if record and (last is None or at > last):
                seen[key] = at
                if self._count_locked() > 2 * self.max_entries:  # amortized: trims to half
                    self._expire_locked(at)
                    self._evict_locked(self.max_entries)
            return new

    def snapshot(self) -> Snapshot:
        with self._lock:
            return {
                rule_id: {encode_key(key): when.isoformat() for key, when in keys.items()}
                for rule_id, keys in self._last_seen.items()
                if keys
            }

    def restore(self, data: Snapshot) -> None:
        """Merge ``data`` in; per key the latest sighting wins. Bad entries are skipped and logged."""
        with self._lock:
            for rule_id, keys in data.items():
                if not isinstance(keys, dict):
                    logger.warning("new_terms history: rule %r: expected an object, skipped", rule_id)
                    continue
                seen = self._last_seen.setdefault(str(rule_id), {})
                for encoded, iso in keys.items():
                    when = parse_iso_time(iso)
                    if when is None:
                        logger.warning("new_terms history: rule %r: bad timestamp %r, entry skipped", rule_id, iso)
                        continue
                    key = decode_key(encoded)
                    if key not in seen or when > seen[key]:
                        seen[key] = when

    def prune(self, *, before: datetime) -> int:
        """Forget sightings older than ``before``, whatever their rule; returns how many were dropped."""
        with self._lock:
            return self._drop_locked(lambda rule_id, when: when < before)

    def expire(self, *, now: datetime) -> int:
        """Forget sightings older than their rule's window at ``now``: they can no longer make a
        term "not new". Rules not evaluated yet (window unknown) keep theirs. Returns how many."""
        with self._lock:
            return self._expire_locked(now)

    def evict(self, *, limit: int) -> int:
        """Forget the oldest sightings beyond ``limit``; returns how many."""
        with self._lock:
            return self._evict_locked(limit)

    def __len__(self) -> int:
        with self._lock:
            return self._count_locked()

    def _count_locked(self) -> int:
        return sum(len(keys) for keys in self._last_seen.values())

    def _expire_locked(self, now: datetime) -> int:
        windows = self._windows
        return self._drop_locked(lambda rule_id, when: rule_id in windows and when < now - windows[rule_id])

    def _drop_locked(self, stale: Callable[[str, datetime], bool]) -> int:
        dropped = 0
        for rule_id, keys in self._last_seen.items():
            for key in [key for key, when in keys.items() if stale(rule_id, when)]:
                del keys[key]
                dropped += 1
        return dropped

    def _evict_locked(self, limit: int) -> int:
        count = self._count_locked()
        if count <= limit:
            return 0
        oldest_first = sorted(
            (when, rule_id, key) for rule_id, keys in self._last_seen.items() for key, when in keys.items()
        )
        excess = count - limit
        for _, rule_id, key in oldest_first[:excess]:
            del self._last_seen[rule_id][key]
        self.evicted += excess
        logger.warning(
            "new_terms history: more than %d sightings; evicted the %d oldest (those terms count as new again)",
            limit, excess,
        )
        return excess


def parse_iso_time(value: Any) -> datetime | None:
    """An ISO 8601 sighting time (``Z`` allowed; no zone: UTC), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
