"""One exception hierarchy: every error says where (file, rule, field, position).

Modules raise these, never bare ValueError/KeyError, so the CLI and the operator
can report bad input clearly and carry on with the rest.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Input quoted in an error message is cut here: a message must never carry (or
# build) a whole value from the input, which may be megabytes, or billions of
# nodes once YAML aliases are expanded.
MAX_QUOTED_CHARS = 80
# A whole message (reason and location) is cut here, as a last guard.
MAX_MESSAGE_CHARS = 2_000


def quoted(value: Any, *, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr`` of a value from the input, bounded: strings are cut to ``limit``
    characters, containers are named, never rendered (their ``repr`` would walk
    them whole)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if -10**limit < value < 10**limit else "a very large integer"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a value of type {type(value).__name__}"


def bounded(text: str, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters]"


class GatewatchError(Exception):
    """Base of every error gatewatch reports to a user."""


class KqlSyntaxError(GatewatchError):
    """A KQL query that does not parse.

    ``str(error)`` is a multi-line message: the reason, the query line, and a
    caret under the offending column.
    """

    def __init__(self, reason: str, *, query: str, offset: int) -> None:
        self.reason = bounded(reason, limit=300)
        self.query = query
        self.offset = max(0, min(offset, len(query)))
        before = query[: self.offset]
        self.line = before.count("\n") + 1
        line_start = before.rfind("\n") + 1
        self.column = self.offset - line_start + 1
        line_end = query.find("\n", self.offset)
        # The query line, or the part of it around the column when it is long.
        self.excerpt, self.caret = excerpt(query[line_start: len(query) if line_end < 0 else line_end], self.column)
        super().__init__(
            f"{self.reason} at line {self.line}, column {self.column}\n    {self.excerpt}\n    {self.caret}"
        )


def excerpt(line: str, column: int, *, width: int = 120) -> tuple[str, str]:
    """``line`` (or ``width`` characters of it around the 1-based ``column``) and a caret line under the column."""
    if len(line) <= width:
        return line, " " * (column - 1) + "^"
    start = max(0, min(column - 1 - width // 2, len(line) - width))
    shown = ("..." if start else "") + line[start: start + width] + ("..." if start + width < len(line) else "")
    return shown, " " * (column - 1 - start + (3 if start else 0)) + "^"


class KqlRenderError(GatewatchError):
    """A KQL syntax tree that KQL text cannot express (a case-insensitive match,
    which only rules imported from EQL have)."""


class RuleError(GatewatchError):
    """A rule file, or one rule in it, that cannot be loaded.

    Carries the location so the message reads ``rules.yaml:12: rule 'x', field
    'severity': must be one of ...``.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        rule_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = bounded(reason)
        self.file = file
        self.line = line
        self.rule_id = rule_id
        self.field = field
        where = file or "<rules>"
        # Every part is bounded: a key or a field name may come from the input.
        if line is not None:
            where += f":{line}"
        parts = [where]
        if rule_id is not None:
            parts.append(f"rule {quoted(rule_id, limit=MAX_QUOTED_CHARS * 4)}")
        if field is not None:
            parts.append(f"field {quoted(field, limit=MAX_QUOTED_CHARS * 2)}")
        super().__init__(", ".join(parts) + ": " + self.reason)


class InputError(GatewatchError):
    """A manifest, AdmissionReview or audit-log line that cannot be read."""

    def __init__(self, reason: str, *, source: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        where = source or "<input>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {reason}")


class ImportRuleError(GatewatchError):
    """An Elastic rule that cannot be converted (unsupported type or syntax)."""

    def __init__(self, reason: str, *, file: str | None = None) -> None:
        self.reason = reason
        self.file = file
        super().__init__(f"{file}: {reason}" if file else reason)


class ExportRuleError(GatewatchError):
    """A gatewatch rule Elastic has no form for (a new_terms rule over EQL)."""

    def __init__(self, reason: str, *, rule_id: str) -> None:
        self.reason = reason
        self.rule_id = rule_id
        super().__init__(f"rule {quoted(rule_id)}: {reason}")


class ConfigError(GatewatchError):
    """Operator settings (config file, GATEWATCH_* variables, flags) that cannot be used."""

    def __init__(self, reason: str, *, source: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        where = source or "<settings>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {reason}")


class KubernetesApiError(GatewatchError):
    """A Kubernetes API call that failed; names the operation, the object and the status.

    ``str(error)`` reads ``update secret gatewatch/gatewatch-tls: 409 Conflict: ...``.
    """

    def __init__(
        self,
        reason: str,
        *,
        operation: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        status: int | None = None,
    ) -> None:
        self.reason = reason
        self.operation = operation
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.status = status
        target = f"{namespace}/{name}" if namespace else name
        code = f"{status} " if status is not None else ""
        super().__init__(f"{operation} {kind} {target}: {code}{reason}")


class CertificateError(GatewatchError):
    """TLS material that cannot be used: unreadable, not PEM, key and certificate not a pair.

    ``source`` names where it came from: a file path, or ``secret ns/name, key tls.crt``.
    """

    def __init__(self, reason: str, *, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


class EqlSyntaxError(KqlSyntaxError):
    """An EQL query that does not parse, or that uses EQL beyond the subset gatewatch
    translates (``unsupported`` is then True: sequences, pipes, functions, ...).

    Same position attributes and caret message as ``KqlSyntaxError``, so code that
    reports query errors handles both.
    """

    def __init__(self, reason: str, *, query: str, offset: int, unsupported: bool = False) -> None:
        self.unsupported = unsupported
        super().__init__(reason, query=query, offset=offset)


class EsqlSyntaxError(KqlSyntaxError):
    """An ES|QL query that does not parse, or that uses ES|QL beyond what gatewatch
    evaluates (``unsupported`` is then True: an unknown function, a regular
    expression Python cannot express, STATS where one event is evaluated, ...).

    Same position attributes and caret message as ``KqlSyntaxError``, so code that
    reports query errors handles all three languages alike.
    """

    def __init__(self, reason: str, *, query: str, offset: int, unsupported: bool = False) -> None:
        self.unsupported = unsupported
        super().__init__(reason, query=query, offset=offset)
