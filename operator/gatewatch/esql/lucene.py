"""RLIKE and LIKE: Lucene's regular expressions and wildcards, translated (or refused).

``RLIKE`` uses Lucene's regular expressions (``org.apache.lucene.util.automaton.RegExp``
with every optional operator on, as ES|QL's ``RLikePattern`` builds it), ``LIKE``
Lucene's wildcards. Each is parsed here by its own rules and written out in the
syntax ``regex.compile_regex`` compiles (RE2, else Python's ``re``).

Lucene RegExp (``lucene_regex``) -- always an anchored whole-string match:

- ``.`` is any character, line breaks included; ``"..."`` a literal string;
  ``()`` the empty string; ``\\`` escapes any character, also inside ``[...]``;
- ``\\d \\D \\s \\S \\w \\W`` are ASCII classes (``\\s`` is space, tab, CR, LF
  only, not Python's wider ``\\s``); another backslash-letter is an error, as in
  Lucene;
- ``@`` any string, ``#`` no string, ``<1-100>`` a decimal interval (leading
  zeros as Lucene: a fixed width when both bounds have the same number of
  digits, else any number of leading zeros);
- ``&`` (intersection) and ``~`` (complement) are evaluated as boolean
  combinations of whole-string matches when they stand at the top of the
  expression (``@&~(abc.+)``); inside a larger expression an intersection with
  one side a finite language (a few literal strings, as in ``0>&1``) becomes
  those strings the other side accepts; any other ``&`` or ``~`` there has no
  Python ``re`` equivalent and the pattern is refused; so are named automata
  ``<name>``. Beware: ES|QL turns every optional operator on, so ``&``, ``@``,
  ``#``, ``<``, ``~`` and ``"`` are operators in an RLIKE pattern unless escaped;
- ``^`` and ``$`` are ordinary characters in Lucene, and stay literal.

A pattern ``.*X.*`` is evaluated as a search for ``X`` (the same strings match),
which keeps the cost linear in the text for the usual rule shape.

Lucene wildcards (``wildcard``): ``*`` any string, ``?`` one character,
``\\`` escapes the next character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gatewatch.esql.regex import NOTHING, Matcher, PatternError, compile_regex
from gatewatch.kql.glob import glob_matcher  # the same linear `*` matcher as KQL

# --- Lucene RegExp: parse (as RegExp.java does) ----------------------------------------------

_WHITESPACE = " \t\n\r"


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # union concat inter optional repeat complement char range any empty string anystring interval class
    children: tuple[_Node, ...] = ()
    text: str = ""
    low: int = 0
    high: int | None = None
    digits: int = 0
    negated: bool = False


class _LuceneParser:
    """A port of RegExp's recursive descent (parseUnionExp ... parseCharExp), all flags on."""

    def __init__(self, pattern: str) -> None:
        self.s = pattern
        self.pos = 0

    def parse(self) -> _Node:
        if not self.s:
            return _Node("string", text="")
        node = self.union()
        if self.pos < len(self.s):
            raise PatternError(f"end-of-string expected at position {self.pos}", self.pos)
        return node

    def more(self) -> bool:
        return self.pos < len(self.s)

    def peek(self, chars: str) -> bool:
        return self.more() and self.s[self.pos] in chars

    def match(self, char: str) -> bool:
        if self.more() and self.s[self.pos] == char:
            self.pos += 1
            return True
        return False

    def next(self) -> str:
        if not self.more():
            raise PatternError("unexpected end-of-string", self.pos)
        char = self.s[self.pos]
        self.pos += 1
        return char

    def union(self) -> _Node:
        node = self.inter()
        if self.match("|"):
            node = _Node("union", (node, self.union()))
        return node

    def inter(self) -> _Node:
        node = self.concat()
        if self.match("&"):
            node = _Node("inter", (node, self.inter()))
        return node

    def concat(self) -> _Node:
        node = self.repeat()
        if self.more() and not self.peek(")|") and not self.peek("&"):
            node = _Node("concat", (node, self.concat()))
        return node

    def repeat(self) -> _Node:
        node = self.complement()
        while self.peek("?*+{"):
            if self.match("?"):
                node = _Node("repeat", (node,), low=0, high=1)
            elif self.match("*"):
                node = _Node("repeat", (node,), low=0, high=None)
            elif self.match("+"):
                node = _Node("repeat", (node,), low=1, high=None)
            elif self.match("{"):
                start = self.pos
                while self.peek("0123456789"):
                    self.next()
                if start == self.pos:
                    raise PatternError(f"integer expected at position {self.pos}", self.pos)
                low = int(self.s[start:self.pos])
                high: int | None
                if self.match(","):
                    start = self.pos
                    while self.peek("0123456789"):
                        self.next()
                    high = int(self.s[start:self.pos]) if start != self.pos else None
                else:
                    high = low
                if not self.match("}"):
                    raise PatternError(f"expected '}}' at position {self.pos}", self.pos)
                node = _Node("repeat", (node,), low=low, high=high)
        return node

    def complement(self) -> _Node:
        if self.match("~"):
            return _Node("complement", (self.complement(),))
        return self.char_class()

    def char_class(self) -> _Node:
        if self.match("["):
            negated = self.match("^")
            items = [self.class_item()]
            while self.more() and not self.peek("]"):
                items.append(self.class_item())
            if not self.match("]"):
                raise PatternError(f"expected ']' at position {self.pos}", self.pos)
            return _Node("class", tuple(items), negated=negated)
        return self.simple()

    def class_item(self) -> _Node:
        predefined = self.predefined()
        if predefined is not None:
            return predefined
        low = self.char_exp()
        if self.match("-"):
            high = self.char_exp()
            if ord(low) > ord(high):
                raise PatternError(f"invalid range: from ({ord(low)}) cannot be > to ({ord(high)})", self.pos)
            return _Node("range", text=low + high)
        return _Node("char", text=low)

    def predefined(self) -> _Node | None:
        start = self.pos
        if self.match("\\"):
            if self.peek("dDwWsS"):
                return _Node("class", (_Node("predefined", text=self.next()),))
            if self.peek("\\"):
                return _Node("char", text=self.next())
            if self.more() and self.s[self.pos].isascii() and self.s[self.pos].isalpha():
                raise PatternError(f"invalid character class \\{self.s[self.pos]}", start)
        return None

    def simple(self) -> _Node:
        if self.match("."):
            return _Node("any")
        if self.match("#"):
            return _Node("empty")
        if self.match("@"):
            return _Node("anystring")
        if self.match('"'):
            start = self.pos
            while self.more() and not self.peek('"'):
                self.next()
            if not self.match('"'):
                raise PatternError(f"expected '\"' at position {self.pos}", self.pos)
            return _Node("string", text=self.s[start:self.pos - 1])
        if self.match("("):
            if self.match(")"):
                return _Node("string", text="")
            node = self.union()
            if not self.match(")"):
                raise PatternError(f"expected ')' at position {self.pos}", self.pos)
            return node
        if self.match("<"):
            start = self.pos
            while self.more() and not self.peek(">"):
                self.next()
            if not self.match(">"):
                raise PatternError(f"expected '>' at position {self.pos}", self.pos)
            body = self.s[start:self.pos - 1]
            dash = body.find("-")
            if dash == -1:
                raise PatternError(
                    f"named automaton <{body}> is not available in ES|QL", start - 1, untranslatable=True
                )
            if dash == 0 or dash == len(body) - 1 or dash != body.rfind("-") or not (
                body[:dash].isdigit() and body[dash + 1:].isdigit()
            ):
                raise PatternError(f"interval syntax error at position {self.pos - 1}", self.pos - 1)
            low_text, high_text = body[:dash], body[dash + 1:]
            low, high = sorted((int(low_text), int(high_text)))
            digits = len(low_text) if len(low_text) == len(high_text) else 0
            return _Node("interval", low=low, high=high, digits=digits)
        predefined = self.predefined()
        if predefined is not None:
            return predefined
        return _Node("char", text=self.char_exp())

    def char_exp(self) -> str:
        self.match("\\")
        return self.next()


# --- Lucene RegExp: write Python ---------------------------------------------------------------

_PREDEFINED_POSITIVE = {"d": "0-9", "s": " \\t\\n\\r", "w": "a-zA-Z_0-9"}


def _class_text(node: _Node) -> str:
    """A class node as Python: ``[...]``, or an alternation when it mixes negated classes in."""
    positive: list[str] = []
    negative: list[str] = []
    for item in node.children:
        if item.kind == "char":
            positive.append(_class_escape(item.text))
        elif item.kind == "range":
            positive.append(_class_escape(item.text[0]) + "-" + _class_escape(item.text[1]))
        elif item.kind in ("class", "predefined"):  # \d \s \w ..., alone or inside [...]
            letter = item.text if item.kind == "predefined" else item.children[0].text
            body = _PREDEFINED_POSITIVE[letter.lower()]
            (positive if letter.islower() else negative).append(body)
        else:  # pragma: no cover - the parser makes no other class items
            raise PatternError("internal: unexpected class item")
    if node.negated:
        if negative:
            # [^a\S]: neither a nor a non-space, i.e. a space other than a.
            allowed = "".join(negative)
            excluded = "".join(positive)
            return f"(?:(?![{excluded}])[{allowed}])" if excluded else f"[{allowed}]"
        return f"[^{''.join(positive)}]"
    pieces = [f"[{''.join(positive)}]"] if positive else []
    pieces += [f"[^{body}]" for body in negative]
    return pieces[0] if len(pieces) == 1 else "(?:" + "|".join(pieces) + ")"


def _class_escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def _digits_range(low: int, high: int) -> str:
    """A regex for the decimal numbers low..high written without leading zeros."""
    if low > high:
        return NOTHING
    parts: list[str] = []
    # Split into ranges of equal digit count, then each into prefix + [a-b] + [0-9]{k} pieces.
    start = low
    while start <= high:
        width = len(str(start))
        end = min(high, 10**width - 1)
        parts.extend(_same_width(str(start), str(end)))
        start = end + 1
    return "(?:" + "|".join(parts) + ")"


def _same_width(low: str, high: str) -> list[str]:
    if low == high:
        return [low]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    # Common prefix.
    if low[0] == high[0]:
        return [low[0] + "(?:" + "|".join(_same_width(low[1:], high[1:])) + ")"]
    rest = len(low) - 1
    parts = []
    if low[1:] != "0" * rest:
        parts.extend(low[0] + p for p in _same_width(low[1:], "9" * rest))
        first = int(low[0]) + 1
    else:
        first = int(low[0])
    if high[1:] != "9" * rest:
        last = int(high[0]) - 1
    else:
        last = int(high[0])
    if first <= last:
        parts.append(f"[{first}-{last}][0-9]{{{rest}}}")
    if high[1:] != "9" * rest:
        parts.extend(high[0] + p for p in _same_width("0" * rest, high[1:]))
    return parts


def _interval_text(node: _Node) -> str:
    """Lucene's decimal interval: exactly ``digits`` wide (zero-padded) when both bounds were
    written with the same number of digits, else any number of leading zeros."""
    assert node.high is not None
    if node.digits:
        width = node.digits
        return "(?:" + "|".join(_same_width(str(node.low).zfill(width), str(node.high).zfill(width))) + ")"
    return "0*" + _digits_range(node.low, node.high)


_FINITE_LIMIT = 1000  # strings: a larger finite language is written as a regular expression


@lru_cache(maxsize=4096)
def _finite(node: _Node) -> frozenset[str] | None:
    """The strings ``node`` matches when they are few (None: many, or infinitely many).

    This is what lets an intersection inside a larger expression be translated:
    ``X&Y`` with one side finite is the strings of that side the other accepts.
    Elastic's own rules need it: in ``.*(0>&1|...).*`` Lucene reads ``&`` as
    intersection (ES|QL enables every optional operator).
    """
    kind = node.kind
    if kind in ("char", "string"):
        return frozenset({node.text})
    if kind == "empty":
        return frozenset()
    if kind == "class" and not node.negated and all(item.kind in ("char", "range") for item in node.children):
        chars: set[str] = set()
        for item in node.children:
            low, high = (item.text, item.text) if item.kind == "char" else (item.text[0], item.text[1])
            if ord(high) - ord(low) + len(chars) >= _FINITE_LIMIT:
                return None
            chars.update(chr(code) for code in range(ord(low), ord(high) + 1))
        return frozenset(chars)
    if kind == "union":
        left, right = _finite(node.children[0]), _finite(node.children[1])
        if left is None or right is None or len(left) + len(right) > _FINITE_LIMIT:
            return None
        return left | right
    if kind == "concat":
        left, right = _finite(node.children[0]), _finite(node.children[1])
        if left is None or right is None or len(left) * len(right) > _FINITE_LIMIT:
            return None
        return frozenset(a + b for a in left for b in right)
    if kind == "repeat" and node.high is not None:
        inner = _finite(node.children[0])
        if inner is None:
            return None
        if node.low > node.high:
            return frozenset()
        words: set[str] = set()
        level = {""}
        for count in range(node.high + 1):
            if count >= node.low:
                words |= level
            if count == node.high:
                break
            level = {a + b for a in level for b in inner}
            if len(words) + len(level) > _FINITE_LIMIT:
                return None
        return frozenset(words)
    if kind == "inter":
        left, right = _finite(node.children[0]), _finite(node.children[1])
        if left is None and right is None:
            return None
        words, other = (left, node.children[1]) if left is not None else (right, node.children[0])
        assert words is not None
        accepts = compile_regex(_python(other)[0], dotall=True).fullmatch
        return frozenset(word for word in words if accepts(word))
    return None


def _alternation(words: frozenset[str]) -> str:
    if not words:
        return NOTHING
    return "(?:" + "|".join(re.escape(word) for word in sorted(words, key=lambda w: (-len(w), w))) + ")"


def _python(node: _Node) -> tuple[str, bool]:
    """(Python pattern, is it a single atom that a quantifier may follow)."""
    kind = node.kind
    if kind == "inter":
        words = _finite(node)
        if words is None:
            raise PatternError(
                "the Lucene operator & (intersection) of two infinite languages inside a larger expression "
                "has no Python regular expression equivalent",
                untranslatable=True,
            )
        return _alternation(words), True
    if kind == "char":
        return re.escape(node.text), True
    if kind == "string":
        text = re.escape(node.text)
        return (text, True) if len(node.text) == 1 else (f"(?:{text})", True)
    if kind == "any":
        return ".", True
    if kind == "anystring":
        return "(?:.*)", True
    if kind == "empty":
        return NOTHING, True
    if kind == "class":
        return _class_text(node), True
    if kind == "interval":
        return f"(?:{_interval_text(node)})", True
    if kind == "union":
        left, _ = _python(node.children[0])
        right, _ = _python(node.children[1])
        return f"(?:{left}|{right})", True
    if kind == "concat":
        left, _ = _python(node.children[0])
        right, _ = _python(node.children[1])
        return left + right, False
    if kind == "repeat":
        inner, atom = _python(node.children[0])
        if not atom:
            inner = f"(?:{inner})"
        if node.low == 0 and node.high == 1:
            quantifier = "?"
        elif node.low == 0 and node.high is None:
            quantifier = "*"
        elif node.low == 1 and node.high is None:
            quantifier = "+"
        elif node.high is None:
            quantifier = f"{{{node.low},}}"
        elif node.low == node.high:
            quantifier = f"{{{node.low}}}"
        else:
            if node.low > node.high:
                return NOTHING, True  # Lucene: an empty language
            quantifier = f"{{{node.low},{node.high}}}"
        return f"(?:{inner}{quantifier})", True
    if kind == "complement":
        raise PatternError(
            "the Lucene operator ~ (complement) inside a larger expression has no Python regular expression "
            "equivalent",
            untranslatable=True,
        )
    raise PatternError(f"internal: unknown node {kind}")  # pragma: no cover


def _flatten_concat(node: _Node) -> list[_Node]:
    if node.kind != "concat":
        return [node]
    return _flatten_concat(node.children[0]) + _flatten_concat(node.children[1])


def _is_any_string(node: _Node) -> bool:
    return node.kind == "anystring" or (
        node.kind == "repeat" and node.low == 0 and node.high is None and node.children[0].kind == "any"
    )


def _concat_nodes(nodes: list[_Node]) -> _Node:
    node = nodes[-1]
    for previous in reversed(nodes[:-1]):
        node = _Node("concat", (previous, node))
    return node


def _plain_matcher(node: _Node) -> Matcher:
    """A whole-string matcher for a node without & and ~ (or with them only at its top)."""
    if node.kind == "union" and _has_boolean(node):
        left, right = _plain_matcher(node.children[0]), _plain_matcher(node.children[1])
        return lambda text: left(text) or right(text)
    if node.kind == "inter" and _has_boolean(node.children[0]) | _has_boolean(node.children[1]) | (
        _finite(node.children[0]) is None and _finite(node.children[1]) is None
    ):
        left, right = _plain_matcher(node.children[0]), _plain_matcher(node.children[1])
        return lambda text: left(text) and right(text)
    if node.kind == "complement":
        inner = _plain_matcher(node.children[0])
        return lambda text: not inner(text)
    parts = _flatten_concat(node)
    if len(parts) >= 2 and _is_any_string(parts[0]) and _is_any_string(parts[-1]):
        middle = parts[1:-1]
        if not middle:
            return lambda text: True
        search = compile_regex(_python(_concat_nodes(middle))[0], dotall=True).search
        return lambda text: search(text) is not None
    if len(parts) >= 2 and _is_any_string(parts[-1]):
        prefix = compile_regex(_python(_concat_nodes(parts[:-1]))[0], dotall=True).match
        return lambda text: prefix(text) is not None
    if len(parts) >= 2 and _is_any_string(parts[0]):
        suffix = compile_regex("(?:" + _python(_concat_nodes(parts[1:]))[0] + ")", dotall=True,
                               anchored_end=True).search
        return lambda text: suffix(text) is not None
    whole = compile_regex(_python(node)[0], dotall=True).fullmatch
    return lambda text: whole(text) is not None


def _has_boolean(node: _Node) -> bool:
    return node.kind in ("inter", "complement") or any(_has_boolean(child) for child in node.children)


@lru_cache(maxsize=1024)
def lucene_regex(pattern: str) -> Matcher:
    """RLIKE: a whole-string matcher for a Lucene regular expression (raises PatternError)."""
    node = _LuceneParser(pattern).parse()
    try:
        return _plain_matcher(node)
    except re.error as error:  # pragma: no cover - the translation only writes valid patterns
        raise PatternError(f"cannot translate: {error}", untranslatable=True) from None


def lucene_regex_text(pattern: str) -> str:
    """The Python pattern (for fullmatch) a Lucene regular expression becomes; for tests and docs."""
    return _python(_LuceneParser(pattern).parse())[0]


# --- Lucene wildcards (LIKE) ---------------------------------------------------------------------


@lru_cache(maxsize=1024)
def wildcard(pattern: str) -> Matcher:
    """LIKE: ``*`` any string, ``?`` one character, ``\\`` escapes (WildcardQuery.toAutomaton)."""
    pieces: list[str | None] = []  # None: *, "\0?": ?, else literal text
    literal: list[str] = []
    has_single = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            pieces.append("".join(literal))
            literal = []
            pieces.append(None)
        elif char == "?":
            has_single = True
            literal.append("\0?")
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            literal.append(pattern[index])
        else:
            literal.append(char)
        index += 1
    pieces.append("".join(literal))
    if has_single:
        regex = "".join(
            ".*" if piece is None else "".join("." if part == "\0?" else re.escape(part) for part in _split_single(piece))
            for piece in pieces
        )
        compiled = compile_regex(regex, dotall=True).fullmatch
        return lambda text: compiled(text) is not None
    parts = [piece for piece in pieces if piece is not None]
    if len(parts) == 1:
        exact = parts[0]
        return lambda text: text == exact
    return glob_matcher(tuple(parts))


def _split_single(piece: str) -> list[str]:
    out: list[str] = []
    buffer: list[str] = []
    index = 0
    while index < len(piece):
        if piece.startswith("\0?", index):
            if buffer:
                out.append("".join(buffer))
                buffer = []
            out.append("\0?")
            index += 2
        else:
            buffer.append(piece[index])
            index += 1
    if buffer:
        out.append("".join(buffer))
    return out
