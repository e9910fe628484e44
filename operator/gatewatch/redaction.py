"""Redaction of the objects an alert carries (``redact_object``): alerts leave the cluster.

Anywhere in an object: container environment values, managedFields and the
last-applied-configuration annotation never reach a SIEM; a Secret's data is
redacted, keys kept; credentials in commands and args (exec commands, a
container's command and args, the requestURI of an exec) become "[redacted]"
(gatewatch.credentials); JSON patch operations on any of these likewise.
Objects nested deeper than ``MAX_ALERT_DEPTH`` are cut there, so any review
gives an alert.

Two walks, one set of decisions (``_redacted_mapping``, ``_redacted_list``):
``_redacted`` copies (an alert a caller keeps, or a sink may change);
``_shared_redacted`` keeps what redaction leaves as it is, for an audit part
encoded at once (``alerts.encoded_audit``): most of a Pod has nothing to
redact, and copying it all was most of the walk's time.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from gatewatch.credentials import redact_argv, redact_text
from gatewatch.query_string import query_pairs

REDACTED = "[redacted]"
# Repeats the whole object as last applied, env values included.
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Objects of the audit event that may hold a Pod (or a workload, or a patch of one).
_REDACTED_AUDIT_FIELDS = ("requestObject", "responseObject")
# Keys whose value is an argument vector: a container's command and args, a probe's or a
# lifecycle hook's exec.command, PodExecOptions.command.
_ARGV_KEYS = frozenset({"command", "args"})
# A Pod is about 12 levels deep; anything deeper in an alert is cut (and says so).
MAX_ALERT_DEPTH = 40
TRUNCATED = f"[truncated: nested deeper than {MAX_ALERT_DEPTH} levels]"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if type(value) is dict or isinstance(value, Mapping) else {}  # dict first: the ABC check costs more


def _redacted_audit(audit: Mapping[str, Any], *, drop_nulls: bool, walk: _Walk | None = None) -> dict[str, Any]:
    """The audit event as an alert carries it: redacted; ``drop_nulls``: without the nulls ``_without_nulls``
    drops (in one walk, not two). ``walk``: ``_redacted`` (a copy), or ``_shared_redacted`` for a part encoded
    at once."""
    walk = walk or _redacted
    # A patch or an item of a list carries no kind: objectRef says they are Secrets.
    secrets = _mapping(audit.get("objectRef")).get("resource") == "secrets"
    redacted: dict[str, Any] = {}
    for key, value in audit.items():
        if value is None and drop_nulls:
            continue
        if key == "requestURI" and isinstance(value, str):
            redacted[key] = _redacted_request_uri(value)
        elif value.__class__ in _SCALARS:  # most of the event: spared the walk's call
            redacted[key] = value
        else:  # every part copied depth-bounded; the objects also redacted
            redacted[key] = walk(value, secrets and key in _REDACTED_AUDIT_FIELDS, 1, drop_nulls)
    return redacted


def _redacted_request_uri(uri: str) -> str:
    """An exec's requestURI carries its command in the query (``?command=curl&command=-H&...``)."""
    path, question, query = uri.partition("?")
    if not question or "command=" not in query:
        return uri
    # The same exec (container, command) comes again and again, to pod after pod: its query redacted once.
    redacted = _remembered_exec_query(query) if len(query) <= _REMEMBERED_QUERY_LENGTH else _redacted_exec_query(query)
    return uri if redacted is None else f"{path}?{redacted}"


def _redacted_exec_query(query: str) -> str | None:
    """An exec URI's query with its command redacted; None when there is nothing to hide (the URI stays as the
    API server wrote it)."""
    pairs = query_pairs(query, keep_blank_values=True)
    redacted = iter(redact_argv([value for key, value in pairs if key == "command"]))
    new_pairs = [(key, next(redacted) if key == "command" else value) for key, value in pairs]
    if new_pairs == pairs:
        return None
    return urlencode(new_pairs, quote_via=quote)


# Exec queries up to this long are remembered (256 of them: 1 MiB at most); longer ones are redacted every time.
_REMEMBERED_QUERY_LENGTH = 4096
_remembered_exec_query = functools.lru_cache(maxsize=256)(_redacted_exec_query)


def redact_object(value: Any, *, secret: bool = False, depth: int = 0) -> Any:
    """A copy of a Kubernetes object (or patch) safe to ship in an alert.

    Anywhere in it: every ``env`` entry's ``value`` becomes "[redacted]" (names
    and ``valueFrom`` references stay), ``metadata.managedFields`` and the
    last-applied-configuration annotation are dropped. The values of a
    Secret's ``data`` and ``stringData`` (``kind: Secret``, or ``secret``: the
    request is about secrets) become "[redacted]", keys kept. In a JSON patch
    (a list of operations), the ``value`` of an operation on an env entry or
    on Secret data is redacted the same way. Credentials in every ``command``
    and ``args`` (and patch operations on them) become "[redacted]"
    (``gatewatch.credentials``). A copy (mappings and lists): ``value`` is
    shared with the document the rules matched, and stays as it was. Below
    ``MAX_ALERT_DEPTH`` (``depth`` counts from the alert's top), a mapping or
    list is replaced by a note that it was cut.
    """
    return _redacted(value, secret, depth, False)


def _redacted(value: Any, secret: bool, depth: int, drop_nulls: bool) -> Any:
    """redact_object's walk (positional arguments: it runs for every mapping and list of an alert's objects).

    ``drop_nulls``: leave out the null values of a mapping reached from the top through mappings only, as
    ``_without_nulls`` does (it stops at lists), so an alert's objects are walked once.
    """
    if value.__class__ in _SCALARS:  # most of an object: nothing to copy or redact
        return value
    if depth >= MAX_ALERT_DEPTH and isinstance(value, (Mapping, list)):
        return TRUNCATED
    if type(value) is dict or isinstance(value, Mapping):  # dict first: the ABC check costs more
        return _redacted_mapping(value, secret, depth, drop_nulls, _redacted)
    if isinstance(value, list):
        return _redacted_list(value, secret, depth, _redacted)
    return value


# A walk of an object's content: _redacted, or _shared_redacted (value, secret, depth, drop_nulls).
_Walk = Callable[[Any, bool, int, bool], Any]


def _redacted_mapping(
        value: Mapping[str, Any], secret: bool, depth: int, drop_nulls: bool, walk: _Walk) -> dict[str, Any]:
    """A mapping redacted (a copy), its content by ``walk``. What redaction does to a mapping is decided here
    alone, by its keys in _REDACTED_KEYS: _shared_redacted leaves a mapping without them to its content."""
    below = depth + 1
    copied: dict[str, Any] = {}
    for key, item in value.items():
        if item.__class__ in _SCALARS and key not in _ARGV_KEYS:  # most fields: nothing to redact
            if item is not None or not drop_nulls:
                copied[key] = item
        elif item is None:  # a command or args of null
            if not drop_nulls:
                copied[key] = item
        elif key not in _REDACTED_KEYS:  # most objects and lists: only their content may be redacted
            copied[key] = walk(item, False, below, drop_nulls)
        elif key == "env" and isinstance(item, list):
            copied[key] = [_redacted_env_var(var, depth=below, walk=walk) for var in item]
        elif key in _ARGV_KEYS and isinstance(item, (list, str)):
            copied[key] = _redacted_argv(item, depth=below, program=_program(value) if key == "args" else None)
        elif key == "metadata" and (type(item) is dict or isinstance(item, Mapping)):
            copied[key] = _redacted_metadata(item, depth=below, drop_nulls=drop_nulls, walk=walk)
        elif key in _SECRET_DATA_FIELDS and isinstance(item, Mapping) and _is_secret(value, secret):
            copied[key] = {name: REDACTED for name in item}
        elif key == "items" and isinstance(item, list):  # a list's items: Secrets if the list is
            is_secret_list = _is_secret(value, secret) or value.get("kind") == "SecretList"
            copied[key] = [walk(entry, is_secret_list, below, False) for entry in item]
        else:
            copied[key] = walk(item, False, below, drop_nulls)
    return copied


def _redacted_list(value: list[Any], secret: bool, depth: int, walk: _Walk) -> list[Any]:
    """A list redacted (a copy): a JSON patch's operations, or each item by ``walk`` (nulls in lists stay)."""
    below = depth + 1
    if _is_patch(value):
        return [_redacted_patch_operation(item, secret=secret, depth=below) for item in value]
    return [item if item.__class__ in _SCALARS else walk(item, False, below, False) for item in value]


def _is_patch(value: list[Any]) -> bool:
    # A list of scalars (a first item of a scalar class), or of dicts without "op" (containers, volumes, ports...),
    # is no patch: spared the checks.
    if not value or value[0].__class__ in _SCALARS or (type(value[0]) is dict and "op" not in value[0]):
        return False
    return _is_patch_operation(value[0]) and all(_is_patch_operation(item) for item in value)


def _shared_redacted(value: Any, secret: bool, depth: int, drop_nulls: bool) -> Any:
    """``_redacted(value, ...)``, except that what it would copy unchanged is ``value``'s own, not a copy:
    for a part encoded at once (``encoded_audit``), never one handed to a caller. Most of a Pod has nothing to
    redact: its mappings and lists are checked at C speed (their keys and their values' types), and copied
    only on the way to something redacted, cut or dropped.

    Only a dict or list proper is shared; anything else takes the general walk, as does every mapping with a
    key redaction looks at (_REDACTED_KEYS) and every JSON patch."""
    kind = type(value)  # type(), not __class__: a dict or list proper, whatever the object says it is
    if kind is dict:
        if depth >= MAX_ALERT_DEPTH:
            return TRUNCATED
        if not _REDACTED_KEYS.isdisjoint(value):
            return _redacted_mapping(value, secret, depth, drop_nulls, _shared_redacted)
        if (_KEPT_SCALARS if drop_nulls else _SCALARS).issuperset(map(type, value.values())):
            return value  # scalars only (and no null to drop): as the general walk copies it
        below = depth + 1
        copied: dict[Any, Any] | None = None
        for key, item in value.items():
            if item.__class__ not in _SCALARS:
                shared = _shared_redacted(item, False, below, drop_nulls)
                if shared is not item:
                    if copied is None:
                        copied = value.copy()  # keys keep their order; changed values are set in place
                    copied[key] = shared
            elif item is None and drop_nulls:
                if copied is None:
                    copied = value.copy()
                del copied[key]
        return value if copied is None else copied
    if kind is list:
        if depth >= MAX_ALERT_DEPTH:
            return TRUNCATED
        if _SCALARS.issuperset(map(type, value)):
            return value  # scalars only: no patch, nothing to redact
        if _is_patch(value):
            return _redacted_list(value, secret, depth, _shared_redacted)
        below = depth + 1
        copied_list: list[Any] | None = None
        for index, item in enumerate(value):
            if item.__class__ not in _SCALARS:
                shared = _shared_redacted(item, False, below, False)
                if shared is not item:
                    if copied_list is None:
                        copied_list = value.copy()
                    copied_list[index] = shared
        return value if copied_list is None else copied_list
    return value if value.__class__ in _SCALARS else _redacted(value, secret, depth, drop_nulls)


def _is_secret(mapping: Mapping[str, Any], secret: bool) -> bool:
    """A Secret's data: the request is about secrets, or the object says it is one (asked only where it matters)."""
    return secret or mapping.get("kind") == "Secret"


def _redacted_argv(argv: list[Any] | str, *, depth: int, program: str | None = None) -> list[Any] | str:
    if isinstance(argv, str):
        return redact_text(argv)
    return [item if isinstance(item, str) else redact_object(item, depth=depth + 1)
            for item in redact_argv(argv, program=program)]


def _program(container: Mapping[str, Any]) -> str | None:
    """The program a container's ``args`` are given to: its ``command``'s first element, if set."""
    command = container.get("command")
    return command[0] if isinstance(command, list) and command and isinstance(command[0], str) else None


_SECRET_DATA_FIELDS = frozenset({"data", "stringData"})
# Keys whose value _redacted treats apart (anything else is copied, its content redacted).
_REDACTED_KEYS = frozenset({"env", "metadata", "items", *_ARGV_KEYS, *_SECRET_DATA_FIELDS})
# Values redact_object returns as they are (bool is an int, but a type of its own here).
_SCALARS = frozenset({str, int, float, bool, type(None)})
# ... and those a mapping keeps where nulls are dropped.
_KEPT_SCALARS = _SCALARS - {type(None)}


def _is_patch_operation(item: Any) -> bool:
    return (type(item) is dict or isinstance(item, Mapping)) \
        and isinstance(item.get("op"), str) and isinstance(item.get("path"), str)


def _redacted_patch_operation(operation: Mapping[str, Any], *, secret: bool, depth: int) -> dict[str, Any]:
    """A JSON patch operation (RFC 6902): its ``value`` redacted where it is an env entry, Secret data,
    or a command or args (whole, or one argument)."""
    copied = {key: redact_object(item, depth=depth + 1) for key, item in operation.items() if key != "value"}
    if "value" not in operation:
        return copied
    segments = operation["path"].split("/")
    value = operation["value"]
    below = depth + 1
    argv_at = next((index for index, segment in enumerate(segments) if segment in _ARGV_KEYS), None)
    if "env" in segments:
        after_env = segments[segments.index("env") + 1:]
        if not after_env:  # the whole env list
            copied["value"] = ([_redacted_env_var(var, depth=below) for var in value] if isinstance(value, list)
                               else REDACTED)
        elif len(after_env) == 1:  # one entry (index or "-")
            copied["value"] = _redacted_env_var(value, depth=below) if isinstance(value, Mapping) else REDACTED
        elif after_env[1] == "value":
            copied["value"] = REDACTED
        else:
            copied["value"] = redact_object(value, depth=below)
    elif argv_at is not None and len(segments) - argv_at <= 2 and isinstance(value, (list, str)):
        copied["value"] = _redacted_argv(value, depth=below)  # the whole command, or one argument
    elif secret and len(segments) > 1 and segments[1] in _SECRET_DATA_FIELDS:
        copied["value"] = {name: REDACTED for name in value} if isinstance(value, Mapping) else REDACTED
    else:
        # Path "" replaces the whole object: a Secret's data is then at the value's top.
        copied["value"] = redact_object(value, secret=secret and operation["path"] == "", depth=below)
    return copied


def _redacted_env_var(var: Any, *, depth: int, walk: _Walk = _redacted) -> Any:
    """An env entry (its content by ``walk``, as redact_object walks it) with its value redacted."""
    # At the bound the entry is cut whole, not merged with its value redacted (that raised).
    if (type(var) is dict or isinstance(var, Mapping)) and var.get("value") is not None and depth < MAX_ALERT_DEPTH:
        return {**walk(var, False, depth, False), "value": REDACTED}
    return walk(var, False, depth, False)


def _redacted_metadata(metadata: Mapping[str, Any], *, depth: int, drop_nulls: bool = False,
                       walk: _Walk = _redacted) -> dict[str, Any]:
    below = depth + 1
    copied = {key: item if item.__class__ in _SCALARS else walk(item, False, below, drop_nulls)
              for key, item in metadata.items()
              if key != "managedFields" and (item is not None or not drop_nulls)}
    annotations = copied.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED_ANNOTATION in annotations:
        copied["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED_ANNOTATION}
    return copied
