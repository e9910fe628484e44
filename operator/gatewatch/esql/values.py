"""ES|QL values over gatewatch documents: types, multi-values, comparison, text form.

A value is ``None`` (null), one scalar, or a tuple of two or more scalars (a
multi-valued field: ES|QL never shows a list of one or an empty list). Scalars:

=====================  ===============================================
ES|QL type             Python
=====================  ===============================================
keyword, text          ``str``
integer, long          ``int``
double                 ``float``
boolean                ``bool``
date                   ``datetime`` (UTC)
ip                     ``ipaddress.IPv4Address`` / ``IPv6Address``
time_duration          ``timedelta``  (``1 minute``)
date_period            ``Period``     (``1 month``)
=====================  ===============================================

Elasticsearch types a field by its index mapping; a gatewatch document has
JSON values only, so a field's type is its JSON type, except the fields
``DATE_FIELDS`` (read as dates) and ``IP_FIELDS`` (read as IP addresses), which
Elastic's Kubernetes integration maps that way. A field holding an object is
no ES|QL value (null).
"""
from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeAlias

from gatewatch.kql.fields import compile_path

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Scalar: TypeAlias = str | int | float | bool | datetime | IPAddress | timedelta
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# The document fields Elastic's Kubernetes audit-log mapping types as date or ip
# (ECS and packages/kubernetes/data_stream/audit_logs/fields).
DATE_FIELDS = frozenset({
    "@timestamp", "event.created", "event.ingested", "event.start", "event.end",
    "kubernetes.audit.requestReceivedTimestamp", "kubernetes.audit.stageTimestamp",
})
IP_FIELDS = frozenset({"source.ip", "client.ip", "related.ip", "destination.ip", "host.ip"})


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar period (``1 month``, ``2 weeks``): months and days, added to dates."""

    months: int = 0
    days: int = 0

    def __neg__(self) -> Period:
        return Period(-self.months, -self.days)


# ES|QL's time units (EsqlDataTypeConverter): name -> (kind, unit).
_UNITS: dict[str, tuple[str, str]] = {}
for _names, _kind, _unit in (
    (("millisecond", "milliseconds", "ms"), "time_duration", "milliseconds"),
    (("second", "seconds", "sec", "s"), "time_duration", "seconds"),
    (("minute", "minutes", "min"), "time_duration", "minutes"),
    (("hour", "hours", "h"), "time_duration", "hours"),
    (("day", "days", "d"), "date_period", "days"),
    (("week", "weeks", "w"), "date_period", "weeks"),
    (("month", "months", "mo"), "date_period", "months"),
    (("quarter", "quarters", "q"), "date_period", "quarters"),
    (("year", "years", "yr", "y"), "date_period", "years"),
):
    for _name in _names:
        _UNITS[_name] = (_kind, _unit)


def duration_literal(amount: int, unit: str) -> tuple[timedelta | Period, str]:
    """``9 minutes`` -> (timedelta, "time_duration"); ``1 month`` -> (Period, "date_period")."""
    found = _UNITS.get(unit.lower())
    if found is None:
        raise ValueError(f"unexpected time interval qualifier: {unit!r}")
    kind, name = found
    if name == "weeks":
        return Period(days=7 * amount), kind
    if name == "days":
        return Period(days=amount), kind
    if name in ("months", "quarters", "years"):
        return Period(months=amount * {"months": 1, "quarters": 3, "years": 12}[name]), kind
    return timedelta(**{name: amount}), kind


# --- multi-values ------------------------------------------------------------------


def normalize(values: list[Any]) -> Value:
    """A list of scalars -> null, one value, or a tuple (nulls dropped, as ES stores them)."""
    kept = [value for value in values if value is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else tuple(kept)


def as_list(value: Value) -> list[Scalar]:
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


def is_multi(value: Value) -> bool:
    return isinstance(value, tuple)


# --- reading documents -------------------------------------------------------------------


def field_reader(name: str) -> Any:
    """A function ``document -> Value`` for the document field ``name``."""
    resolve = compile_path(name)
    if name in DATE_FIELDS:
        convert = parse_date
    elif name in IP_FIELDS:
        convert = parse_ip
    else:
        convert = None

    def read(document: Mapping[str, Any]) -> Value:
        found = resolve(document)
        if not found:
            return None
        leaves = [value for value in found if not isinstance(value, Mapping)]
        if convert is not None:
            leaves = [convert(value) if isinstance(value, str) else None for value in leaves]
        else:
            leaves = [value for value in leaves if isinstance(value, (str, int, float, bool))]
        return normalize(leaves)

    return read


def parse_date(text: Any) -> datetime | None:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_ip(text: Any) -> IPAddress | None:
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # Elasticsearch stores ::ffff:a.b.c.d as the IPv4 address
    return address


# --- types -------------------------------------------------------------------------------------


def type_name(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "keyword"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return "ip"
    if isinstance(value, timedelta):
        return "time_duration"
    if isinstance(value, Period):
        return "date_period"
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coerce_pair(left: Scalar, right: Scalar) -> tuple[Any, Any] | None:
    """The two values made comparable as ES|QL would, or None when their types differ.

    ES|QL casts a string to a date or an IP address when the other side is one
    (its implicit casting of string literals); numbers compare across integer,
    long and double.
    """
    if is_number(left) and is_number(right):
        return left, right
    if type(left) is type(right) or (isinstance(left, str) and isinstance(right, str)):
        return left, right
    if isinstance(left, datetime) and isinstance(right, str):
        parsed = parse_date(right)
        return (left, parsed) if parsed is not None else None
    if isinstance(right, datetime) and isinstance(left, str):
        parsed = parse_date(left)
        return (parsed, right) if parsed is not None else None
    if isinstance(left, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        other = parse_ip(right) if isinstance(right, str) else right
        return (left, other) if isinstance(other, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None
    if isinstance(right, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        other = parse_ip(left) if isinstance(left, str) else left
        return (other, right) if isinstance(other, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None
    return None


def _ip_key(address: IPAddress) -> tuple[int, int]:
    # Elasticsearch orders IPs by their 16-byte form: every IPv4 address before IPv6 ones past ::ffff:0:0/96.
    if isinstance(address, ipaddress.IPv4Address):
        return 0, int(ipaddress.IPv6Address(f"::ffff:{address}"))
    return 0, int(address)


def compare(operator: str, left: Value, right: Value) -> bool | None:
    """``left <operator> right`` with ES|QL's nulls: null or a multi-value gives null."""
    if left is None or right is None or isinstance(left, tuple) or isinstance(right, tuple):
        return None
    if operator == "=~":
        if isinstance(left, str) and isinstance(right, str):
            return left.casefold() == right.casefold()
        return None
    pair = _coerce_pair(left, right)
    if pair is None:
        return None
    a, b = pair
    if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        a, b = _ip_key(a), _ip_key(b)
    if isinstance(a, float) and math.isnan(a) or isinstance(b, float) and math.isnan(b):
        return operator == "!="
    try:
        if operator == "==":
            return a == b
        if operator == "!=":
            return a != b
        if operator == "<":
            return a < b
        if operator == "<=":
            return a <= b
        if operator == ">":
            return a > b
        if operator == ">=":
            return a >= b
    except TypeError:  # e.g. booleans with timedeltas: no ES|QL query gets here
        return None
    raise ValueError(f"unknown comparison {operator}")


def equals(left: Scalar, right: Scalar) -> bool:
    """Scalar equality as ``==`` decides it (False when the types cannot be compared)."""
    return compare("==", left, right) is True


# --- text form ---------------------------------------------------------------------------------


def format_date(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_string(value: Scalar) -> str:
    """TO_STRING of one value, as ES|QL prints it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _java_double(value)
    if isinstance(value, datetime):
        return format_date(value)
    if isinstance(value, timedelta):
        return _duration_text(value)
    return str(value)


def _java_double(value: float) -> str:
    # Java's Double.toString: 1.0, 0.001, 1.0E-4, 1.0E7, NaN, Infinity.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    magnitude = abs(value)
    if magnitude == 0 or 1e-3 <= magnitude < 1e7:
        text = repr(value)
        return text if "." in text or "e" in text else text + ".0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    shown = "".join(map(str, digits)).rstrip("0") or "0"
    scientific = len(digits) - 1 + int(exponent)
    return f"{'-' if sign else ''}{shown[0]}.{shown[1:] or '0'}E{scientific}"


def _duration_text(value: timedelta) -> str:
    total_ms = int(value / timedelta(milliseconds=1))
    return f"PT{total_ms / 1000:g}S"


# --- arithmetic ---------------------------------------------------------------------------------


def add_period(moment: datetime, period: Period, sign: int = 1) -> datetime:
    months = moment.month - 1 + sign * period.months
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, _days_in_month(year, month))
    return moment.replace(year=year, month=month, day=day) + timedelta(days=sign * period.days)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def checked_long(number: int | float) -> int | float | None:
    if isinstance(number, int) and not LONG_MIN <= number <= LONG_MAX:
        return None  # long overflow: ES|QL gives null with a warning
    return number


def arithmetic(operator: str, left: Value, right: Value) -> Value:
    """``+ - * / %`` with ES|QL's rules: nulls and multi-values give null, integer division
    truncates, a division by zero or an overflow gives null, dates move by durations."""
    if left is None or right is None or isinstance(left, tuple) or isinstance(right, tuple):
        return None
    try:
        return _arithmetic(operator, left, right)
    except (OverflowError, ValueError, ArithmeticError):
        return None  # a date out of range, a float overflow: null, as ES|QL's failed evaluation


def _arithmetic(operator: str, left: Any, right: Any) -> Value:
    if is_number(left) and is_number(right):
        if operator == "+":
            return checked_long(left + right)
        if operator == "-":
            return checked_long(left - right)
        if operator == "*":
            return checked_long(left * right)
        if right == 0:
            return None
        if isinstance(left, int) and isinstance(right, int):
            quotient = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)  # Java truncation
            return checked_long(quotient) if operator == "/" else left - right * quotient
        if operator == "/":
            return left / right
        return left - right * int(left / right)  # Java's % on doubles keeps the dividend's sign
    if isinstance(left, datetime) and operator in "+-":
        sign = 1 if operator == "+" else -1
        if isinstance(right, timedelta):
            return left + sign * right
        if isinstance(right, Period):
            return add_period(left, right, sign)
    if isinstance(right, datetime) and operator == "+":
        return _arithmetic("+", right, left)
    if isinstance(left, timedelta) and isinstance(right, timedelta) and operator in "+-":
        return left + right if operator == "+" else left - right
    if isinstance(left, Period) and isinstance(right, Period) and operator in "+-":
        sign = 1 if operator == "+" else -1
        return Period(left.months + sign * right.months, left.days + sign * right.days)
    return None
