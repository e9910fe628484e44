"""ES|QL scalar functions, with ES|QL's null and multi-value rules.

Each function is one of three kinds, as in Elasticsearch:

- ``scalar``: null when an argument is null; null (ES|QL adds a warning) when an
  argument is multi-valued;
- ``convert``: applied to each value of its first argument, so a multi-value
  gives a multi-value (TO_STRING, TO_LOWER, URL_DECODE, the TO_* conversions);
  a value that cannot be converted is dropped (null with a warning in ES|QL);
- ``multi``: reads multi-values as they are (the MV_* functions).

CASE, COALESCE and KQL are compiled by ``gatewatch.esql.compiler``: their
arguments are evaluated lazily or at compile time. An error inside a function
(a bad regular expression built at run time, a number out of range) gives null,
as ES|QL's "evaluation failed, treating result as null" does.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from gatewatch.esql.javaregex import java_literal, java_literal_replacement, java_regex, java_replacement
from gatewatch.esql.regex import PatternError
from gatewatch.esql.values import (
    LONG_MAX,
    LONG_MIN,
    Scalar,
    Value,
    as_list,
    compare,
    equals,
    is_number,
    normalize,
    parse_date,
    parse_ip,
    to_string,
)
from gatewatch.esql.values import Period

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    kind: str  # scalar | convert | multi
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: variadic

    def arity_text(self) -> str:
        if self.max_args == self.min_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        if self.max_args is None:
            return f"at least {self.min_args} arguments"
        return f"{self.min_args} to {self.max_args} arguments"


FUNCTIONS: dict[str, Function] = {}
# Functions ES|QL has that gatewatch refuses, with the reason.
UNSUPPORTED: dict[str, str] = {
    "match": "full-text search needs an Elasticsearch index",
    "match_phrase": "full-text search needs an Elasticsearch index",
    "multi_match": "full-text search needs an Elasticsearch index",
    "qstr": "query_string search needs an Elasticsearch index",
    "knn": "vector search needs an Elasticsearch index",
    "score": "relevance scores need an Elasticsearch index",
}
# Aggregate functions: valid only inside STATS.
AGGREGATES = frozenset({
    "count", "count_distinct", "values", "min", "max", "sum", "avg", "median", "top", "first", "last",
    "percentile", "std_dev", "variance", "median_absolute_deviation", "weighted_avg", "sample", "absent",
    "present", "st_centroid_agg", "st_extent_agg", "rate",
})


def _register(name: str, kind: str, min_args: int, max_args: int | None = -1, *aliases: str) -> Callable:
    def decorate(impl: Callable[..., Any]) -> Callable[..., Any]:
        upper = min_args if max_args == -1 else max_args
        for alias in (name, *aliases):
            FUNCTIONS[alias] = Function(alias, kind, impl, min_args, upper)
        return impl

    return decorate


class EvaluationError(Exception):
    """Raised inside a function: the value becomes null (ES|QL warns)."""


def apply(function: Function, args: list[Value]) -> Value:
    """Call ``function`` with ES|QL's null / multi-value rules for its kind."""
    try:
        if function.kind == "multi":
            return function.impl(*args)
        if function.kind == "convert":
            first, rest = args[0], args[1:]
            if any(value is None or isinstance(value, tuple) for value in rest):
                return None
            results = []
            for value in as_list(first):
                try:
                    results.append(function.impl(value, *rest))
                except (EvaluationError, ValueError, ArithmeticError, OverflowError):
                    continue  # null for that value (ES|QL: a warning)
            return normalize(results)
        if any(value is None for value in args):
            return None
        if any(isinstance(value, tuple) for value in args):
            return None  # single-value function encountered multi-value
        return function.impl(*args)
    except (EvaluationError, PatternError, ValueError, ArithmeticError, OverflowError, TypeError):
        return None


def _string(value: Scalar) -> str:
    if not isinstance(value, str):
        raise EvaluationError(f"expected a string, got {value!r}")
    return value


def _int(value: Scalar) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvaluationError(f"expected an integer, got {value!r}")
    return value


def _long(value: int) -> int:
    if not LONG_MIN <= value <= LONG_MAX:
        raise EvaluationError("long overflow")
    return value


# --- strings -------------------------------------------------------------------------------


@_register("length", "scalar", 1)
def _length(value: Scalar) -> int:
    return len(_string(value))


@_register("to_lower", "convert", 1)
def _to_lower(value: Scalar) -> str:
    return _string(value).lower()


@_register("to_upper", "convert", 1)
def _to_upper(value: Scalar) -> str:
    return _string(value).upper()


@_register("starts_with", "scalar", 2)
def _starts_with(value: Scalar, prefix: Scalar) -> bool:
    return _string(value).startswith(_string(prefix))


@_register("ends_with", "scalar", 2)
def _ends_with(value: Scalar, suffix: Scalar) -> bool:
    return _string(value).endswith(_string(suffix))


@_register("contains", "scalar", 2)
def _contains(value: Scalar, part: Scalar) -> bool:
    return _string(part) in _string(value)


@_register("concat", "scalar", 2, None)
def _concat(*values: Scalar) -> str:
    return "".join(_string(value) for value in values)


@_register("trim", "scalar", 1)
def _trim(value: Scalar) -> str:
    return _string(value).strip()


@_register("ltrim", "scalar", 1)
def _ltrim(value: Scalar) -> str:
    return _string(value).lstrip()


@_register("rtrim", "scalar", 1)
def _rtrim(value: Scalar) -> str:
    return _string(value).rstrip()


@_register("substring", "scalar", 2, 3)
def _substring(value: Scalar, start: Scalar, length: Scalar | None = None) -> str:
    text, begin = _string(value), _int(start)
    count = len(text)
    # 1-based; 0 is 1; negative counts from the end (Substring.indexStart).
    index = begin - 1 if begin > 0 else count + begin if begin < 0 else 0
    index = min(max(0, index), count)
    if length is None:
        return text[index:]
    size = _int(length)
    if size < 0:
        raise EvaluationError("Length parameter cannot be negative")
    return text[index:min(count, index + size)]


@_register("left", "scalar", 2)
def _left(value: Scalar, length: Scalar) -> str:
    size = _int(length)
    return _string(value)[:max(size, 0)]


@_register("right", "scalar", 2)
def _right(value: Scalar, length: Scalar) -> str:
    text, size = _string(value), _int(length)
    return text[len(text) - min(max(size, 0), len(text)):]


@_register("reverse", "scalar", 1)
def _reverse(value: Scalar) -> str:
    return _string(value)[::-1]


@_register("repeat", "scalar", 2)
def _repeat(value: Scalar, times: Scalar) -> str:
    count = _int(times)
    if count < 0:
        raise EvaluationError("Number parameter cannot be negative")
    return _string(value) * count


@_register("locate", "scalar", 2, 3)
def _locate(value: Scalar, part: Scalar, start: Scalar | None = None) -> int:
    text, needle = _string(value), _string(part)
    begin = 0 if start is None else max(_int(start) - 1, 0)
    return text.find(needle, begin) + 1


@_register("split", "scalar", 2)
def _split(value: Scalar, delimiter: Scalar) -> Value:
    text, separator = _string(value), _string(delimiter)
    if not separator:
        raise EvaluationError("delimiter must not be empty")
    return normalize(text.split(separator))


@_register("replace", "scalar", 3)
def _replace(value: Scalar, regex: Scalar, replacement: Scalar) -> str:
    literal, literal_replacement = java_literal(_string(regex)), java_literal_replacement(_string(replacement))
    if literal is not None and literal_replacement is not None:
        return _string(value).replace(literal, literal_replacement)  # what replaceAll does, without a regex
    pattern = java_regex(_string(regex))
    repl = java_replacement(_string(replacement), pattern.groups, frozenset(pattern.groupindex))
    return pattern.sub(repl, _string(value))


@_register("url_decode", "convert", 1)
def _url_decode(value: Scalar) -> str:
    return url_decode(_string(value))


_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_ESCAPE_RUN = re.compile(r"(?:%[0-9a-fA-F]{2})+")


def _decode_run(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", errors="replace")


def url_decode(text: str) -> str:
    """``java.net.URLDecoder.decode(text, UTF_8)``: ``+`` is a space, ``%xy`` runs are UTF-8
    bytes (malformed ones become U+FFFD), a malformed escape is an error."""
    if "%" not in text and "+" not in text:
        return text
    if _BAD_ESCAPE.search(text) is None:  # the usual case, in time linear in the text
        return _ESCAPE_RUN.sub(_decode_run, text.replace("+", " "))
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "+":
            out.append(" ")
            index += 1
        elif char == "%":
            data = bytearray()
            while index + 2 < length and text[index] == "%":
                pair = text[index + 1:index + 3]
                if not re.fullmatch(r"\+?[0-9a-fA-F]+", pair):  # Integer.parseInt(pair, 16), sign included
                    raise EvaluationError("URLDecoder: Illegal hex characters in escape (%) pattern")
                data.append(int(pair, 16))
                index += 3
            if index < length and text[index] == "%":
                raise EvaluationError("URLDecoder: Incomplete trailing escape (%) pattern")
            out.append(data.decode("utf-8", errors="replace"))
        else:
            out.append(char)
            index += 1
    return "".join(out)


@_register("url_encode", "convert", 1)
def _url_encode(value: Scalar) -> str:
    return quote(_string(value), safe=".-_~").replace("%20", "+")


@_register("url_encode_component", "convert", 1)
def _url_encode_component(value: Scalar) -> str:
    return quote(_string(value), safe=".-_~")


@_register("md5", "scalar", 1)
def _md5(value: Scalar) -> str:
    return hashlib.md5(_string(value).encode()).hexdigest()


@_register("sha1", "scalar", 1)
def _sha1(value: Scalar) -> str:
    return hashlib.sha1(_string(value).encode()).hexdigest()


@_register("sha256", "scalar", 1)
def _sha256(value: Scalar) -> str:
    return hashlib.sha256(_string(value).encode()).hexdigest()


# --- conversions -----------------------------------------------------------------------------


@_register("to_string", "convert", 1, 1, "to_str")
def _to_string(value: Scalar) -> str:
    return to_string(value)


def _whole_number(value: Scalar, low: int, high: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EvaluationError("not a finite number")
        number = int(value)  # truncation, as a Java cast
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            number = int(float(text))
    elif isinstance(value, datetime):
        number = int(value.timestamp() * 1000)
    else:
        raise EvaluationError(f"cannot convert {value!r}")
    if not low <= number <= high:
        raise EvaluationError("out of range")
    return number


@_register("to_integer", "convert", 1, 1, "to_int")
def _to_integer(value: Scalar) -> int:
    return _whole_number(value, INT_MIN, INT_MAX)


@_register("to_long", "convert", 1)
def _to_long(value: Scalar) -> int:
    return _whole_number(value, LONG_MIN, LONG_MAX)


@_register("to_double", "convert", 1, 1, "to_dbl")
def _to_double(value: Scalar) -> float:
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    if isinstance(value, datetime):
        return float(int(value.timestamp() * 1000))
    raise EvaluationError(f"cannot convert {value!r}")


@_register("to_boolean", "convert", 1, 1, "to_bool")
def _to_boolean(value: Scalar) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"  # Boolean.parseBoolean
    if is_number(value):
        return value != 0
    raise EvaluationError(f"cannot convert {value!r}")


@_register("to_datetime", "convert", 1, 1, "to_dt")
def _to_datetime(value: Scalar) -> datetime:
    if isinstance(value, datetime):
        return value
    if is_number(value):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    parsed = parse_date(value)
    if parsed is None:
        raise EvaluationError(f"cannot parse date {value!r}")
    return parsed


@_register("to_ip", "convert", 1)
def _to_ip(value: Scalar) -> Scalar:
    parsed = parse_ip(value)
    if parsed is None:
        raise EvaluationError(f"not an IP address: {value!r}")
    return parsed


CASTS = {
    "keyword": "to_string", "text": "to_string", "string": "to_string",
    "integer": "to_integer", "int": "to_integer", "long": "to_long", "double": "to_double",
    "boolean": "to_boolean", "bool": "to_boolean", "datetime": "to_datetime", "date": "to_datetime",
    "ip": "to_ip",
}


# --- dates ------------------------------------------------------------------------------------


@_register("date_trunc", "scalar", 2)
def _date_trunc(interval: Scalar, value: Scalar) -> datetime:
    moment = value if isinstance(value, datetime) else None
    if moment is None:
        raise EvaluationError("DATE_TRUNC needs a date")
    moment = moment.astimezone(timezone.utc)
    if isinstance(interval, timedelta):
        step = int(interval / timedelta(milliseconds=1))
        if step <= 0:
            raise EvaluationError("zero or negative time interval is not supported")
        millis = int(moment.timestamp() * 1000) // step * step
        return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    if isinstance(interval, Period):
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if interval.months:
            months = (day.year * 12 + day.month - 1) // interval.months * interval.months
            return day.replace(year=months // 12, month=months % 12 + 1, day=1)
        if interval.days % 7 == 0 and interval.days:
            return day - timedelta(days=day.weekday())  # weeks start on Monday
        if interval.days:
            epoch_days = (day - datetime(1970, 1, 1, tzinfo=timezone.utc)).days // interval.days * interval.days
            return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=epoch_days)
    raise EvaluationError("DATE_TRUNC needs a time interval")


# --- numbers -------------------------------------------------------------------------------------


def _number(value: Scalar) -> int | float:
    if not is_number(value):
        raise EvaluationError(f"expected a number, got {value!r}")
    return value  # type: ignore[return-value]


@_register("abs", "scalar", 1)
def _abs(value: Scalar) -> int | float:
    number = _number(value)
    return _long(abs(number)) if isinstance(number, int) else abs(number)


@_register("floor", "scalar", 1)
def _floor(value: Scalar) -> int | float:
    number = _number(value)
    return number if isinstance(number, int) else float(math.floor(number))


@_register("ceil", "scalar", 1)
def _ceil(value: Scalar) -> int | float:
    number = _number(value)
    return number if isinstance(number, int) else float(math.ceil(number))


@_register("round", "scalar", 1, 2)
def _round(value: Scalar, decimals: Scalar | None = None) -> int | float:
    number, places = _number(value), 0 if decimals is None else _int(decimals)
    if isinstance(number, int):
        if places >= 0:
            return number
        factor = 10 ** -places
        return int(math.floor(abs(number) / factor + 0.5)) * factor * (1 if number >= 0 else -1)
    factor = 10.0**places
    return math.floor(abs(number) * factor + 0.5) / factor * (1 if number >= 0 else -1)  # half away from zero


# --- IP addresses ---------------------------------------------------------------------------------


@_register("cidr_match", "scalar", 2, None)
def _cidr_match(value: Scalar, *blocks: Scalar) -> bool:
    address = parse_ip(value) if isinstance(value, str) else value
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise EvaluationError("CIDR_MATCH needs an IP address")
    for block in blocks:
        network = ipaddress.ip_network(_string(block), strict=False)
        if address.version == network.version and address in network:
            return True
    return False


# --- multi-values ---------------------------------------------------------------------------------


@_register("mv_count", "multi", 1)
def _mv_count(value: Value) -> int | None:
    return None if value is None else len(as_list(value))


@_register("mv_first", "multi", 1)
def _mv_first(value: Value) -> Value:
    values = as_list(value)
    return values[0] if values else None


@_register("mv_last", "multi", 1)
def _mv_last(value: Value) -> Value:
    values = as_list(value)
    return values[-1] if values else None


def _ordered(values: list[Scalar]) -> list[Scalar]:
    try:
        return sorted(values)  # type: ignore[type-var]
    except TypeError:
        raise EvaluationError("values of different types cannot be ordered") from None


@_register("mv_min", "multi", 1)
def _mv_min(value: Value) -> Value:
    values = as_list(value)
    return _ordered(values)[0] if values else None


@_register("mv_max", "multi", 1)
def _mv_max(value: Value) -> Value:
    values = as_list(value)
    return _ordered(values)[-1] if values else None


@_register("mv_sum", "multi", 1)
def _mv_sum(value: Value) -> Value:
    values = as_list(value)
    if not values:
        return None
    total = sum(_number(item) for item in values)
    return _long(total) if isinstance(total, int) else total


@_register("mv_avg", "multi", 1)
def _mv_avg(value: Value) -> Value:
    values = as_list(value)
    return sum(_number(item) for item in values) / len(values) if values else None


@_register("mv_concat", "multi", 2)
def _mv_concat(value: Value, delimiter: Value) -> Value:
    if value is None or delimiter is None or isinstance(delimiter, tuple):
        return None
    return _string(delimiter).join(_string(item) for item in as_list(value))


@_register("mv_dedupe", "multi", 1)
def _mv_dedupe(value: Value) -> Value:
    kept: list[Scalar] = []
    for item in as_list(value):
        if not any(equals(item, seen) for seen in kept):
            kept.append(item)
    return normalize(kept)


@_register("mv_contains", "multi", 2)
def _mv_contains(superset: Value, subset: Value) -> Value:
    if subset is None:
        return True
    if superset is None:
        return False
    values = as_list(superset)
    return all(any(equals(item, candidate) for candidate in values) for item in as_list(subset))


@_register("mv_append", "multi", 2)
def _mv_append(first: Value, second: Value) -> Value:
    if first is None or second is None:
        return None
    return normalize(as_list(first) + as_list(second))


@_register("mv_slice", "multi", 2, 3)
def _mv_slice(value: Value, start: Value, end: Value = None) -> Value:
    if value is None or start is None:
        return None
    values = as_list(value)
    first = _int(start)  # type: ignore[arg-type]
    last = first if end is None else _int(end)  # type: ignore[arg-type]
    if first < 0:
        first += len(values)
    if last < 0:
        last += len(values)
    if first < 0 or last < first:
        raise EvaluationError("invalid MV_SLICE bounds")
    return normalize(values[first:last + 1])


@_register("mv_sort", "multi", 1, 2)
def _mv_sort(value: Value, order: Value = "ASC") -> Value:
    if value is None:
        return None
    direction = str(order).upper()
    if direction not in ("ASC", "DESC"):
        raise EvaluationError("Invalid order value in [MV_SORT], expected one of [ASC, DESC]")
    return normalize(sorted(as_list(value), reverse=direction == "DESC"))  # type: ignore[type-var]


def values_equal_for_in(value: Scalar, candidate: Value) -> bool | None:
    """One IN comparison: null when the candidate is null or multi-valued."""
    return compare("==", value, candidate)
