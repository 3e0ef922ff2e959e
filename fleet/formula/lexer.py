"""Split formula text into tokens, each with its 1-based line and column."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from fleet.errors import BadInput

PARSE_ERROR = "InvalidAutoScaleFormula"
FIELD = "autoScaleFormula"


class Kind(Enum):
    """What a token is."""

    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    OP = "operator"
    END = "end of formula"


@dataclass(frozen=True)
class Token:
    """One token: its kind, its text (a string literal's text is its unescaped content),
    where it starts, and whether a line break separates it from the token before."""

    kind: Kind
    text: str
    line: int
    column: int
    newline_before: bool = False

    def describe(self) -> str:
        """Return the token as an error message names it."""
        if self.kind is Kind.END:
            return "the end of the formula"
        if self.kind is Kind.STRING:
            return f"string {self.text!r}"
        return repr(self.text)


def formula_error(message: str, line: int, column: int) -> BadInput:
    """Return the BadInput for a formula that cannot be parsed, naming the line and column."""
    return BadInput(
        f"line {line}, column {column}: {message}",
        code=PARSE_ERROR,
        field=FIELD,
        details={"line": line, "column": column},
    )


#: Operators, longest first so that ``<=`` wins over ``<``.
OPERATORS = ("<=", ">=", "==", "!=", "&&", "||", "+", "-", "*", "/", "<", ">", "!", "?", ":")
PUNCTUATION = ("(", ")", ",", ".", ";", "=")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


class _Scanner:
    """Walks the text once, keeping line and column."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.column = 1

    def advance(self, count: int) -> None:
        for char in self.text[self.pos : self.pos + count]:
            if char == "\n":
                self.line += 1
                self.column = 1
            else:
                self.column += 1
        self.pos += count

    def skip_space_and_comments(self) -> bool:
        """Skip blanks and ``//`` and ``/* */`` comments; return whether a line break was seen."""
        newline = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r\n\f\v":
                newline |= char == "\n"
                self.advance(1)
            elif self.text.startswith("//", self.pos):
                end = self.text.find("\n", self.pos)
                self.advance((len(self.text) if end < 0 else end) - self.pos)
            elif self.text.startswith("/*", self.pos):
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise formula_error("a /* comment is never closed", self.line, self.column)
                newline |= "\n" in self.text[self.pos : end]
                self.advance(end + 2 - self.pos)
            else:
                break
        return newline

    def string(self) -> str:
        """Read a double-quoted string literal (escapes ``\\"``, ``\\\\``, ``\\n``, ``\\t``)."""
        line, column = self.line, self.column
        self.advance(1)
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.advance(1)
                return "".join(out)
            if char == "\n":
                break
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in _ESCAPES:
                    raise formula_error(
                        f"unknown escape \\{escaped} in a string", self.line, self.column
                    )
                out.append(_ESCAPES[escaped])
                self.advance(2)
                continue
            out.append(char)
            self.advance(1)
        raise formula_error("a string is never closed", line, column)


def tokenize(text: str) -> list[Token]:
    """Return the tokens of ``text``, ending with an END token.

    Raises BadInput (code InvalidAutoScaleFormula) for a character that starts no token,
    an unclosed string or an unclosed comment.
    """
    scanner = _Scanner(text)
    tokens: list[Token] = []
    while True:
        newline = scanner.skip_space_and_comments()
        line, column = scanner.line, scanner.column
        if scanner.pos >= len(text):
            tokens.append(Token(Kind.END, "", line, column, newline))
            return tokens
        char = text[scanner.pos]
        if char == '"':
            tokens.append(Token(Kind.STRING, scanner.string(), line, column, newline))
            continue
        if number := _NUMBER.match(text, scanner.pos):
            kind, word = Kind.NUMBER, number.group()
            if (after := _NAME.match(text, number.end())) and not after.group().startswith("$"):
                raise formula_error(f"a number runs into {after.group()!r}", line, column)
        elif name := _NAME.match(text, scanner.pos):
            kind, word = Kind.NAME, name.group()
        else:
            word = next(
                (op for op in OPERATORS + PUNCTUATION if text.startswith(op, scanner.pos)), ""
            )
            if not word:
                raise formula_error(f"unexpected character {char!r}", line, column)
            kind = Kind.OP
        tokens.append(Token(kind, word, line, column, newline))
        scanner.advance(len(word))
