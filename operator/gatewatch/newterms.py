"""new_terms history: has this combination of values been seen within the window?

Elastic's new_terms rule alerts only when the combination of the rule's
new_terms field values was not seen in the history window before the event.
The state sits behind a small protocol so the CLI keeps it in memory and the
operator persists it (``gatewatch.kube.newterms_store``).
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

Key = tuple[str, ...]


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

    def snapshot(self) -> dict[str, dict[str, str]]:
        """The state as JSON-friendly data: rule id -> encoded key -> last seen (ISO 8601)."""
        ...

    def restore(self, data: dict[str, dict[str, str]]) -> None:
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
    """Last-seen times per (rule, key), in memory. Thread-safe."""

    def __init__(self) -> None:
        self._last_seen: dict[str, dict[Key, datetime]] = {}
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
            seen = self._last_seen.setdefault(rule_id, {})
            last = seen.get(key)
            # History is what was seen in the window up to `at`; a later sighting
            # (out-of-order input) is not history for an earlier event.
            new = last is None or not (at - window <= last <= at)
            if record and (last is None or at > last):
                seen[key] = at
            return new

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {
                rule_id: {encode_key(key): when.isoformat() for key, when in keys.items()}
                for rule_id, keys in self._last_seen.items()
            }

    def restore(self, data: dict[str, dict[str, str]]) -> None:
        with self._lock:
            for rule_id, keys in data.items():
                seen = self._last_seen.setdefault(rule_id, {})
                for encoded, iso in keys.items():
                    when = datetime.fromisoformat(iso)
                    key = decode_key(encoded)
                    if key not in seen or when > seen[key]:
                        seen[key] = when

    def prune(self, *, before: datetime) -> int:
        """Forget sightings older than ``before``; returns how many were dropped."""
        dropped = 0
        with self._lock:
            for keys in self._last_seen.values():
                stale = [key for key, when in keys.items() if when < before]
                for key in stale:
                    del keys[key]
                dropped += len(stale)
        return dropped

    def __len__(self) -> int:
        with self._lock:
            return sum(len(keys) for keys in self._last_seen.values())
