"""Rule files picked up at runtime, without a restart.

The chart mounts the rules ConfigMap as files. The kubelet updates such a
mount by swapping a symlink (``..data``), so modification times are useless:
:class:`RulesReloader` compares the content hashes of the files every
``interval`` seconds. When they change it loads the whole set again and hands
the new ``RuleSet`` to ``on_change`` (e.g. ``RuleEngine.replace_rules``, which
swaps atomically).

An invalid update never replaces a working rule set: the last good set stays
in use, and the error (a rule error, a file beyond the loader's bounds, a set
without an enabled rule unless allowed, or anything the load raised) (with its file, line and rule) is logged, counted in
``gatewatch_rules_reload_failures`` and, if a recorder is given, recorded as an
Event on the rules ConfigMap. The same broken content is reported once, not on
every poll.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from gatewatch.errors import GatewatchError, RuleError, bounded
from gatewatch.kube.events import EventRecorder, ObjectRef, rules_rejected_event
from gatewatch.rules import RuleSet, load_rules

if TYPE_CHECKING:
    from gatewatch.metrics import Metrics

logger = logging.getLogger(__name__)

# The content of each watched file, or None when it cannot be read.
Fingerprint = tuple[tuple[str, str | None], ...]
RulesLoader = Callable[[list[Path]], RuleSet]


@dataclass(frozen=True)
class ReloadResult:
    changed: bool  # the files differ from the last check
    applied: bool  # a new rule set is in use
    error: GatewatchError | None = None


class RulesReloader:
    """Polls rule files; applies valid changes, keeps the last good set on invalid ones."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        interval: float,
        on_change: Callable[[RuleSet], None],
        load: RulesLoader | None = None,
        allow_empty: bool = False,
        metrics: Metrics | None = None,
        event_recorder: EventRecorder | None = None,
        configmap: ObjectRef | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        """``clock``: when a rejected update was seen (its Event's time)."""
        self.paths = [Path(path) for path in paths]
        self.interval = interval
        self._on_change = on_change
        # allow_empty: accept files without an enabled rule (refused by default: protection would be off).
        self._load: RulesLoader = load or functools.partial(load_rules, allow_empty=allow_empty)
        self._metrics = metrics
        self._recorder = event_recorder
        self._configmap = configmap
        self._clock = clock
        self._fingerprint: Fingerprint | None = None
        self.ruleset: RuleSet | None = None  # the set in use (the last good one)
        self.last_error: GatewatchError | None = None  # of the files on disk now, if they are invalid
        self._loading: asyncio.Future[RuleSet | GatewatchError | None] | None = None  # a load under way

    def load_initial(self) -> RuleSet:
        """Load the rules at start and remember the files' contents. Raises ``RuleError``.

        Does not call ``on_change``: the caller builds its engine from the result.
        """
        fingerprint = self.fingerprint()
        ruleset = self._load(list(self.paths))
        self._fingerprint = fingerprint
        self.ruleset = ruleset
        self._set_loaded_gauge(ruleset)
        return ruleset

    def fingerprint(self) -> Fingerprint:
        """Content hash of every file (symlinks followed: the ConfigMap swap is seen)."""
        return tuple((str(path), _content_hash(path)) for path in self.paths)

    def check(self) -> ReloadResult:
        """One poll, all on this thread: reload if the files changed (tests, or a sync caller)."""
        return self._apply(self._read_changes())

    async def reload_once(self) -> ReloadResult:
        """One poll, as ``check`` does, but reading and compiling in a thread; the swap happens on
        the event loop, between reviews. The operator's supervisor calls it every ``interval``
        seconds (gatewatch.background).

        Whatever the load raises (a bad rule file, or RecursionError and the like) is a rejected
        update: the current rules stay in use, and it is counted and reported. A call cancelled (its
        timeout) leaves the load running in its thread: the next call waits for that load
        rather than starting another one beside it.
        """
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._read_changes))
        loading = self._loading
        try:
            result = await asyncio.shield(loading)
        finally:
            if loading.done():
                self._loading = None
        return self._apply(result)

    def _read_changes(self) -> RuleSet | GatewatchError | None:
        """None when the files are unchanged, else the new set or why it cannot be used."""
        fingerprint = self.fingerprint()
        if fingerprint == self._fingerprint:
            return None
        missing = [path for path, digest in fingerprint if digest is None]
        try:
            if missing:
                raise RuleError("cannot read the rule file", file=missing[0])
            result: RuleSet | GatewatchError = self._load(list(self.paths))
        except GatewatchError as error:
            result = error
        except Exception as error:
            # The loader's bounds should leave nothing here (RecursionError, MemoryError...); whatever
            # does is still a rejected update, counted and reported like any other, never a silent stop.
            result = RuleError(f"cannot load the rules: {type(error).__name__}: {bounded(str(error))}",
                               file=", ".join(map(str, self.paths)))
        self._fingerprint = fingerprint
        return result

    def _apply(self, result: RuleSet | GatewatchError | None) -> ReloadResult:
        if result is None:
            return ReloadResult(changed=False, applied=False, error=self.last_error)
        if isinstance(result, GatewatchError):
            self._rejected(result)
            return ReloadResult(changed=True, applied=False, error=result)
        try:
            self._on_change(result)
        except Exception:
            self._fingerprint = None  # not in use: the next poll loads and hands it over again
            raise
        self.ruleset = result
        self.last_error = None
        self._set_loaded_gauge(result)
        logger.info("rules reloaded: %d rule(s) from %s", _rule_count(result), ", ".join(map(str, self.paths)))
        return ReloadResult(changed=True, applied=True)

    def _rejected(self, error: GatewatchError) -> None:
        self.last_error = error
        # str(RuleError) reads "rules.yaml:12, rule 'x', field 'severity': ..."
        logger.error("rules update rejected, the previous rules stay in use: %s", error)
        if self._metrics is not None:
            self._metrics.rules_reload_failures.inc()
        if self._recorder is not None and self._configmap is not None:
            self._recorder.submit(rules_rejected_event(configmap=self._configmap, error=error,
                                                       observed_at=self._clock()))

    def _set_loaded_gauge(self, ruleset: Any) -> None:
        if self._metrics is not None:
            self._metrics.rules_loaded.set(_rule_count(ruleset, enabled_only=True))


def _content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _rule_count(ruleset: Any, *, enabled_only: bool = False) -> int:
    rules = getattr(ruleset, "rules", ()) or ()
    if enabled_only:
        return sum(1 for rule in rules if getattr(rule, "enabled", True))
    return len(rules)
