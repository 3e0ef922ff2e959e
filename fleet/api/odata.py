"""OData query options of Azure Batch's list and get operations, pure, over the JSON objects
``fleet/views.py`` renders: ``$filter``, ``$select``, ``$expand``, ``maxresults`` and the
``odata.nextLink`` of the next page.

``$filter`` is the subset of OData that Azure Batch documents ("OData filters in Azure
Batch", "Create queries to list Batch resources efficiently"):

- comparisons ``operand op operand``, ``op`` one of ``eq ne gt ge lt le``, each operand a
  property path or a literal: ``executionInfo/result eq 'failure'``;
- property paths: names joined by ``/``, matched exactly, since Azure's property names are
  case-sensitive; a property the object lacks (or a path through something that is not an
  object) is null;
- literals: ``'text'`` (``''`` is a quote inside), integers and decimals (``-1``, ``0.5``),
  ``true``, ``false``, ``null``, and ``datetime'2025-06-01T10:00:00Z'`` in ISO 8601 (W3C-DTF)
  or RFC 1123 (``datetime'Sun, 01 Jun 2025 10:00:00 GMT'``), UTC when it names no zone;
- the function ``startswith(path, 'prefix')``;
- ``and``, ``or``, ``not`` and parentheses, with the precedence ``not`` > comparisons >
  ``and`` > ``or``. ``not`` applies to the value right after it, so ``not state eq 'x'``
  is refused: write ``not (state eq 'x')``;
- keywords, ``datetime`` and ``startswith`` in any case (``AND``, ``DateTime``).

Values compare as Azure describes: strings without regard to case (Azure's property values
are case-insensitive), numbers as numbers, a datetime literal against the object's ISO 8601
string as instants. Values of different types (a number and a string, a boolean and a
number) are never equal and never ordered. ``null eq null`` is true, null equals nothing
else, and an ordering with a null operand is false (but ``null ge null`` and ``null le
null``). ``and``, ``or`` and ``not`` are three-valued, null meaning unknown, and an object
matches when the whole filter is true. Azure allows each list only some properties and
operators and answers 400 for others; fleet accepts every path and operator on every list.

A filter is at most ``MAX_LENGTH`` characters, and parentheses, ``not`` and function
calls nest at most ``MAX_DEPTH`` deep, so no input recurses without limit. A filter that
cannot be parsed raises BadInput (``InvalidQueryParameterValue``, field ``$filter``) whose
message names the column (1-based) and what was expected there; ``details["column"]`` has
the column. A blank option (``$filter=``, ``$select=``, ``$expand=``, ``maxresults=``) is
as if it were absent.

Paging: ``parse_maxresults`` reads the page size and ``next_link`` builds
``odata.nextLink``: the request's URL with every query option kept and ``$skiptoken`` set
to where the next page starts (fleet/api/listing.py pages the lists).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fleet.errors import BadInput

#: The error code of every malformed query option (Azure's).
CODE = "InvalidQueryParameterValue"
#: The longest ``$filter``, ``$select`` or ``$expand`` accepted, in characters.
MAX_LENGTH = 4096
#: How deep parentheses, ``not`` and function calls may nest in a ``$filter``.
MAX_DEPTH = 32
#: The only ``$expand`` Azure Batch has (pools, jobs, job schedules and tasks).
EXPANSIONS = frozenset({"stats"})
#: The query option that carries the id a next page starts after.
SKIP_OPTION = "$skiptoken"

Obj = dict[str, Any]
_Eval = Callable[[Obj], Any]


def _error(param: str, message: str, column: int | None = None) -> BadInput:
    """Return the BadInput for a malformed query option ``param``."""
    return BadInput(
        f"{param}: {message}",
        code=CODE,
        field=param,
        details=None if column is None else {"column": column},
    )


# ---------------------------------------------------------------------------- tokens

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    op: getattr(operator, op) for op in ("eq", "ne", "gt", "ge", "lt", "le")
}
_KEYWORDS = frozenset({*_COMPARISONS, "and", "or", "not", "true", "false", "null"})
_CONSTANTS = {"true": True, "false": False, "null": None}
#: Operators of other languages that people write, with the OData word for each.
_SYMBOLS = {"==": "eq", "=": "eq", "!=": "ne", "<>": "ne", ">=": "ge", ">": "gt", "<=": "le"}
_SYMBOLS |= {"<": "lt", "&&": "and", "||": "or", "!": "not"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WORD_CHARS = re.compile(r"[A-Za-z0-9_.]+")
_SYMBOL = re.compile("|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True)))


@dataclass(frozen=True)
class _Token:
    """One token: its kind (``name``, ``string``, ``number``, ``datetime``, ``symbol``, a
    punctuation mark, or ``end``), its source text, its literal value, its 1-based column."""

    kind: str
    text: str
    column: int
    value: Any = None

    def keyword(self) -> str | None:
        """Return the keyword this name token is (lower case), or None."""
        word = self.text.lower()
        return word if self.kind == "name" and word in _KEYWORDS else None

    def describe(self) -> str:
        """Return the token as an error message names it."""
        if self.kind == "end":
            return "the end of the filter"
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return text if self.kind in ("string", "datetime") else f"'{text}'"


def _tokens(text: str) -> list[_Token]:
    """Split a filter into tokens, ending with an ``end`` token."""
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        column = pos + 1
        if char.isspace():
            pos += 1
        elif char in "(),":
            out.append(_Token(char, char, column))
            pos += 1
        elif char == "'":
            end, value = _string(text, pos, column)
            out.append(_Token("string", text[pos:end], column, value))
            pos = end
        elif name := _NAME.match(text, pos):
            pos = _name(text, name.end(), column, out)
        elif number := _NUMBER.match(text, pos):
            pos = _number(text, number, column, out)
        elif symbol := _SYMBOL.match(text, pos):
            out.append(_Token("symbol", symbol.group(), column))
            pos = symbol.end()
        else:
            raise _error("$filter", f"unexpected character {char!r} at column {column}", column)
    out.append(_Token("end", "", len(text) + 1))
    return out


def _string(text: str, start: int, column: int) -> tuple[int, str]:
    """Return where the string literal opening at ``start`` ends, and its value."""
    parts: list[str] = []
    pos = start + 1
    while True:
        close = text.find("'", pos)
        if close < 0:
            raise _error("$filter", f"unterminated string starting at column {column}", column)
        parts.append(text[pos:close])
        if text.startswith("''", close):
            parts.append("'")
            pos = close + 2
        else:
            return close + 1, "".join(parts)


def _name(text: str, pos: int, column: int, out: list[_Token]) -> int:
    """Append the path (or keyword, or ``datetime'...'`` literal) starting at ``column``
    whose first name ends at ``pos``; return where it ends."""
    start = column - 1
    if text.startswith("'", pos):
        kind = text[start:pos]
        if kind.lower() != "datetime":
            raise _error("$filter", f"unknown literal type '{kind}' at column {column}", column)
        end, value = _string(text, pos, pos + 1)
        out.append(_Token("datetime", text[start:end], column, _datetime_literal(value, column)))
        return end
    while text.startswith("/", pos):
        segment = _NAME.match(text, pos + 1)
        if segment is None:
            raise _error(
                "$filter", f"expected a property name after '/' at column {pos + 2}", pos + 2
            )
        pos = segment.end()
    out.append(_Token("name", text[start:pos], column))
    return pos


def _number(text: str, match: re.Match[str], column: int, out: list[_Token]) -> int:
    """Append the number literal ``match`` found; return where it ends."""
    glued = _WORD_CHARS.match(text, match.end())
    if glued:
        word = text[match.start() : glued.end()]
        raise _error("$filter", f"malformed number '{word}' at column {column}", column)
    literal = match.group()
    value = float(literal) if "." in literal else int(literal)
    out.append(_Token("number", literal, column, value))
    return match.end()


def _instant(text: str) -> datetime | None:
    """Return an ISO 8601 or RFC 1123 time as an aware UTC datetime (UTC if it names no
    zone), or None if it is neither or out of range."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _datetime_literal(text: str, column: int) -> datetime:
    """The instant a ``datetime'...'`` literal at ``column`` names."""
    when = _instant(text)
    if when is None:
        raise _error(
            "$filter",
            f"invalid datetime '{text}' at column {column}: expected ISO 8601 such as "
            "2025-06-01T10:00:00Z or RFC 1123 such as 'Sun, 01 Jun 2025 10:00:00 GMT'",
            column,
        )
    return when


# ---------------------------------------------------------------------------- evaluation


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Return ``a`` and ``b`` in the form they compare in, or None if they never compare."""
    if isinstance(a, datetime) or isinstance(b, datetime):
        x = a if isinstance(a, datetime) else _instant(a) if isinstance(a, str) else None
        y = b if isinstance(b, datetime) else _instant(b) if isinstance(b, str) else None
        return None if x is None or y is None else (x, y)
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold(), b.casefold()
    return None


def _compare(op: str, a: Any, b: Any) -> bool:
    """Return whether ``a op b`` holds, by the rules in the module's docstring."""
    if a is None or b is None:
        both = a is None and b is None
        return both if op in ("eq", "ge", "le") else (not both if op == "ne" else False)
    pair = _comparable(a, b)
    if pair is None:
        return op == "ne"
    return _COMPARISONS[op](*pair)


def _path(segments: list[str]) -> _Eval:
    """The value at a property path, None where the object has none."""

    def get(obj: Obj) -> Any:
        value: Any = obj
        for name in segments:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return get


def _junction(terms: list[_Eval], decisive: bool) -> _Eval:
    """Three-valued ``and`` (``decisive`` False) or ``or`` (``decisive`` True): decisive if
    any term is, else unknown (None) if any term is not a boolean, else the other boolean."""

    def test(obj: Obj) -> bool | None:
        result: bool | None = not decisive
        for term in terms:
            value = term(obj)
            if value is decisive:
                return decisive
            if not isinstance(value, bool):
                result = None
        return result

    return test


def _not(term: _Eval) -> _Eval:
    """Three-valued ``not``: unknown (None) stays unknown, and so does a non-boolean."""

    def test(obj: Obj) -> bool | None:
        value = term(obj)
        return not value if isinstance(value, bool) else None

    return test


def _comparison(op: str, left: _Eval, right: _Eval) -> _Eval:
    """``left op right``, never unknown."""
    return lambda obj: _compare(op, left(obj), right(obj))


def _startswith(path: _Eval, prefix: str) -> _Eval:
    """``startswith(path, prefix)`` without regard to case; unknown (None) on null."""
    folded = prefix.casefold()

    def test(obj: Obj) -> bool | None:
        value = path(obj)
        if value is None:
            return None
        return isinstance(value, str) and value.casefold().startswith(folded)

    return test


# ---------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Term:
    """A parsed part of a filter: how to evaluate it on an object, what it is (``literal``,
    ``path``, ``not`` or ``condition``), where it starts, and a literal's token."""

    evaluate: _Eval
    kind: str
    column: int
    token: _Token | None = None


class _Parser:
    """Recursive descent over the tokens, one method per precedence level; ``depth`` counts
    the parentheses, ``not`` and calls around the current point. The grammar::

        filter      = [disjunction]
        disjunction = conjunction *("or" conjunction)
        conjunction = condition *("and" condition)
        condition   = unary [("eq" / "ne" / "gt" / "ge" / "lt" / "le") unary]
        unary       = "not" unary / primary
        primary     = "(" disjunction ")" / literal / path
                      / "startswith" "(" path "," string ")"

    where a ``condition`` standing alone (an operand of and, or, not, or the whole filter)
    is no number, string, datetime or null literal, and a ``not`` is never compared.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, expected: str, token: _Token) -> BadInput:
        return _error(
            "$filter",
            f"expected {expected} at column {token.column}, found {token.describe()}",
            token.column,
        )

    def expect(self, kind: str, expected: str) -> _Token:
        if self.peek().kind != kind:
            raise self.fail(expected, self.peek())
        return self.take()

    def filter(self) -> _Eval:
        if self.peek().kind == "end":
            return lambda obj: True
        term = self.disjunction(0, "a condition")
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or the end of the filter", self.peek())
        return term.evaluate

    def disjunction(self, depth: int, expected: str) -> _Term:
        return self.junction("or", self.conjunction, depth, expected)

    def conjunction(self, depth: int, expected: str) -> _Term:
        return self.junction("and", self.condition, depth, expected)

    def junction(
        self, word: str, operand: Callable[[int, str], _Term], depth: int, expected: str
    ) -> _Term:
        """Operands joined by ``word`` (``and`` or ``or``), as one n-ary term: a long chain
        is evaluated in a loop, not recursion."""
        terms = [operand(depth, expected)]
        while self.peek().keyword() == word:
            self.take()
            terms.append(operand(depth, f"a condition after '{word}'"))
        if len(terms) == 1:
            return terms[0]
        test = _junction([t.evaluate for t in terms], decisive=word == "or")
        return _Term(test, "condition", terms[0].column)

    def condition(self, depth: int, expected: str) -> _Term:
        term = self.comparison(depth, expected)
        self.require_condition(term, expected)
        return term

    def require_condition(self, term: _Term, expected: str) -> None:
        """Refuse a number, string, datetime or null literal where a condition goes."""
        token = term.token
        if token is not None and token.keyword() not in ("true", "false"):
            raise self.fail(expected, token)

    def comparison(self, depth: int, expected: str) -> _Term:
        left = self.unary(depth, expected)
        self.refuse_unknown_operator()
        op = self.peek().keyword()
        if op not in _COMPARISONS:
            return left
        if left.kind == "not":
            raise _error(
                "$filter",
                f"'not' at column {left.column} applies only to the value right after it, "
                f"not to the '{op}' comparison: write not (a {op} b)",
                left.column,
            )
        self.take()
        if self.peek().keyword() == "not":
            raise self.fail(f"a value after '{op}'", self.peek())
        right = self.unary(depth, f"a value after '{op}'")
        self.refuse_unknown_operator()
        return _Term(_comparison(op, left.evaluate, right.evaluate), "condition", left.column)

    def refuse_unknown_operator(self) -> None:
        """Raise if the next token stands where an operator goes but is none of OData's."""
        token = self.peek()
        self.refuse_symbol(token)
        if token.kind == "name" and token.keyword() is None:
            raise _error(
                "$filter",
                f"unknown operator '{token.text}' at column {token.column}: Azure Batch "
                "filters use eq, ne, gt, ge, lt, le, and, or and not",
                token.column,
            )

    def refuse_symbol(self, token: _Token) -> None:
        """Raise for another language's operator (``==``, ``&&``, ``!``), naming OData's."""
        if token.kind == "symbol":
            word = _SYMBOLS[token.text]
            raise _error(
                "$filter",
                f"unknown operator '{token.text}' at column {token.column}: write {word}",
                token.column,
            )

    def unary(self, depth: int, expected: str) -> _Term:
        """``not`` and the value right after it (``not`` binds tighter than comparisons)."""
        token = self.peek()
        if token.keyword() != "not":
            return self.primary(depth, expected)
        self.take()
        self.check_depth(depth + 1, token)
        operand = self.unary(depth + 1, "a condition after 'not'")
        self.require_condition(operand, "a condition after 'not'")
        return _Term(_not(operand.evaluate), "not", token.column)

    def primary(self, depth: int, expected: str) -> _Term:
        token = self.peek()
        if token.kind == "(":
            self.take()
            self.check_depth(depth + 1, token)
            inner = self.disjunction(depth + 1, "a condition after '('")
            self.expect(")", "')'")
            return _Term(inner.evaluate, "condition", token.column)
        if token.kind in ("string", "number", "datetime"):
            self.take()
            value = token.value
            return _Term(lambda obj: value, "literal", token.column, token)
        self.refuse_symbol(token)
        word = token.keyword()
        if token.kind != "name" or word not in (None, *_CONSTANTS):
            raise self.fail(expected, token)
        self.take()
        if word is not None:
            constant = _CONSTANTS[word]
            return _Term(lambda obj: constant, "literal", token.column, token)
        if self.peek().kind == "(":
            return self.call(depth, token)
        return _Term(_path(token.text.split("/")), "path", token.column)

    def call(self, depth: int, name: _Token) -> _Term:
        if name.text.lower() != "startswith":
            raise _error(
                "$filter",
                f"unknown function '{name.text}' at column {name.column}: Azure Batch "
                "filters have startswith only",
                name.column,
            )
        self.check_depth(depth + 1, name)
        self.take()  # (
        first = self.peek()
        path = self.unary(depth + 1, "a property path as startswith's first argument")
        if path.kind != "path":
            raise self.fail("a property path as startswith's first argument", first)
        self.expect(",", "',' and a string after startswith's first argument")
        prefix = self.expect("string", "a string as startswith's second argument")
        self.expect(")", "')' after startswith's two arguments")
        return _Term(_startswith(path.evaluate, prefix.value), "condition", name.column)

    def check_depth(self, depth: int, token: _Token) -> None:
        if depth > MAX_DEPTH:
            raise _error(
                "$filter",
                f"nested more than {MAX_DEPTH} levels deep at column {token.column}",
                token.column,
            )


@dataclass(frozen=True)
class Filter:
    """A parsed ``$filter``: ``text`` as given, and the test ``matches`` applies."""

    text: str
    test: _Eval = field(repr=False, compare=False)

    def matches(self, obj: Obj) -> bool:
        """Return whether the JSON object (as ``fleet.views`` renders it) passes the filter."""
        return self.test(obj) is True


def parse_filter(text: str) -> Filter:
    """Return the ``$filter`` as a Filter (a blank one matches everything).

    Raises BadInput (``InvalidQueryParameterValue``, field ``$filter``) for a filter longer
    than MAX_LENGTH, nested deeper than MAX_DEPTH, or malformed, naming the column.
    """
    if len(text) > MAX_LENGTH:
        raise _error("$filter", f"longer than {MAX_LENGTH} characters ({len(text)})")
    return Filter(text, _Parser(text).filter())


# ---------------------------------------------------------------------------- other options


def _items(param: str, text: str) -> Iterable[tuple[str, int]]:
    """Yield the comma-separated items of a query option with their columns, refusing an
    empty item."""
    if len(text) > MAX_LENGTH:
        raise _error(param, f"longer than {MAX_LENGTH} characters ({len(text)})")
    start = 0
    for part in text.split(","):
        column = start + len(part) - len(part.lstrip()) + 1
        item = part.strip()
        if not item:
            raise _error(param, f"expected a name at column {column}", column)
        yield item, column
        start += len(part) + 1


def parse_select(text: str | None) -> list[str] | None:
    """Return the property names a ``$select`` keeps, in order and without repeats, or None
    (keep every property) when it is absent, blank or ``*``.

    Raises BadInput (``InvalidQueryParameterValue``, field ``$select``) for an empty item, or
    one that is not a top-level property name.
    """
    if text is None or text.strip() in ("", "*"):
        return None
    names: list[str] = []
    for item, column in _items("$select", text):
        if "/" in item:
            raise _error(
                "$select",
                f"only top-level properties can be selected, not '{item}' (column {column})",
                column,
            )
        if not _NAME.fullmatch(item):
            raise _error(
                "$select", f"expected a property name at column {column}, found '{item}'", column
            )
        if item not in names:
            names.append(item)
    return names


def select(obj: Obj, fields: Collection[str] | None) -> Obj:
    """Return ``obj`` with only the top-level ``fields`` it has, in its own order (all of it
    when ``fields`` is None)."""
    if fields is None:
        return obj
    return {name: value for name, value in obj.items() if name in fields}


def parse_expand(text: str | None) -> set[str]:
    """Return the expansions an ``$expand`` asks for: a subset of EXPANSIONS (``stats``).

    Raises BadInput (``InvalidQueryParameterValue``, field ``$expand``) for any other name.
    """
    if text is None or not text.strip():
        return set()
    out: set[str] = set()
    for item, column in _items("$expand", text):
        if item not in EXPANSIONS:
            raise _error(
                "$expand",
                f"cannot expand '{item}' (column {column}): Azure Batch expands stats only",
                column,
            )
        out.add(item)
    return out


def wants_stats(fields: Collection[str] | None, expand: Collection[str]) -> bool:
    """Return whether an object should carry ``stats``: Azure adds them for
    ``$expand=stats``, or when ``$select`` names ``stats``."""
    return "stats" in expand or (fields is not None and "stats" in fields)


_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_maxresults(text: str | None, default: int = 1000, limit: int = 1000) -> int:
    """Return the page size ``maxresults`` asks for: ``default`` when absent or blank.

    Raises BadInput (``InvalidQueryParameterValue``, field ``maxresults``) for anything but
    a whole number from 1 to ``limit``.
    """
    if text is None or not text.strip():
        return default
    digits = _DIGITS.fullmatch(text.strip())
    if digits is None or not 1 <= int(digits.group()) <= limit:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _error("maxresults", f"expected a whole number from 1 to {limit}, got '{shown}'")
    return int(digits.group())


def next_link(base_url: str, query: Sequence[tuple[str, str]], skip_token: str) -> str:
    """Return the absolute ``odata.nextLink``: ``base_url`` (its own query and fragment
    dropped) with every option of ``query`` (decoded pairs, in order) but a previous
    ``$skiptoken``, then ``$skiptoken=skip_token``, all percent-encoded.

    Raises ValueError if ``base_url`` is not absolute (a bug in the caller).
    """
    scheme, netloc, path, _, _ = urlsplit(base_url)
    if not scheme or not netloc:
        raise ValueError(f"odata.nextLink needs an absolute base URL, got {base_url!r}")
    pairs = [(k, v) for k, v in query if k.lower() != SKIP_OPTION]
    pairs.append((SKIP_OPTION, skip_token))
    encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in pairs)
    return urlunsplit((scheme, netloc, path, encoded, ""))
