"""A URL query's pairs as ``urllib.parse.parse_qsl`` reads them, without its generality.

Every exec review builds its document from the requestURI's query
(``?command=sh&command=-c&container=app``) and every exec alert redacts the
commands in it: the same rules as ``parse_qsl`` (``&`` only, ``+`` a space,
percent escapes decoded, a pair without ``=`` or with a blank value kept only
with ``keep_blank_values``), with the decoding skipped where there is nothing
to decode.
"""
from __future__ import annotations

from urllib.parse import unquote


def query_pairs(query: str, *, keep_blank_values: bool = False) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=keep_blank_values)``: the same pairs, in order."""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&") if query else ():
        if not part:
            continue
        name, _, value = part.partition("=")
        if not value and not keep_blank_values:
            continue
        if "%" in name or "+" in name:
            name = unquote(name.replace("+", " "))
        if "%" in value or "+" in value:
            value = unquote(value.replace("+", " "))
        pairs.append((name, value))
    return pairs


__all__ = ["query_pairs"]
