"""Values worked out once per object, told apart by identity.

What a rule's warning line and its Events say of it is the same for every
match of that rule object, and rules are not cheap to hash (a frozen dataclass
hashes every field). A reload brings new rule objects, so an entry is found
only while its object is the one it was made for; the table starts over when it
grows past its limit.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class PerObject(Generic[V]):
    """``make(obj, *args)``, made once per object (by identity) and ``args``."""

    __slots__ = ("_make", "_limit", "_known")

    def __init__(self, make: Callable[..., V], *, limit: int = 4096) -> None:
        self._make = make
        self._limit = limit
        self._known: dict[tuple[int, tuple[Hashable, ...]], tuple[Any, V]] = {}

    def get(self, obj: Any, *args: Hashable) -> V:
        key = (id(obj), args)
        known = self._known.get(key)
        if known is not None and known[0] is obj:  # the same object, not one reusing a freed id
            return known[1]
        value = self._make(obj, *args)
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[key] = (obj, value)  # holds obj: its id cannot be reused while the entry lives
        return value


__all__ = ["PerObject"]
