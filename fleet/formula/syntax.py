"""The formula's syntax tree: frozen dataclasses, each node knowing its line and column.

Positions take no part in equality, so two parses of the same formula laid out
differently compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Node:
    """Base of every node: where its text starts (1-based)."""

    line: int = field(default=0, compare=False, kw_only=True)
    column: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True)
class Number(Node):
    """A numeric literal such as ``70`` or ``0.5``."""

    value: float


@dataclass(frozen=True)
class String(Node):
    """A string literal such as ``"2024-01-01T00:00:00Z"``."""

    value: str


@dataclass(frozen=True)
class Name(Node):
    """A variable or constant: ``$CPUPercent``, ``myVar``, ``TimeInterval_Minute``, ``requeue``."""

    name: str


@dataclass(frozen=True)
class Unary(Node):
    """``-x`` or ``!x``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary(Node):
    """``left op right`` for the arithmetic, comparison and logical operators."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Conditional(Node):
    """``condition ? then : otherwise``."""

    condition: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True)
class Call(Node):
    """A built-in function call such as ``avg(v, 7)``."""

    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Member(Node):
    """A member read such as ``$curTime.hour``."""

    target: Expr
    member: str


@dataclass(frozen=True)
class MethodCall(Node):
    """A method call on a value, such as ``$CPUPercent.GetSample(TimeInterval_Minute * 5)``."""

    target: Expr
    method: str
    args: tuple[Expr, ...]


Expr = Number | String | Name | Unary | Binary | Conditional | Call | Member | MethodCall


@dataclass(frozen=True)
class Assignment(Node):
    """``name = value``: to a user variable or a writable service variable."""

    name: str
    value: Expr


@dataclass(frozen=True)
class ExprStatement(Node):
    """A statement that is only an expression, such as ``stop()``."""

    value: Expr


Statement = Assignment | ExprStatement


def children(node: Expr) -> tuple[Expr, ...]:
    """Return the expressions directly inside ``node``."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Conditional):
        return (node.condition, node.then, node.otherwise)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Member):
        return (node.target,)
    if isinstance(node, MethodCall):
        return (node.target, *node.args)
    return ()


def deepest(node: Expr) -> tuple[int, Expr]:
    """Return the depth of the tree under ``node`` and its deepest node, without recursion
    (so a tree of any depth can be measured before anything recurses over it)."""
    best = (1, node)
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > best[0]:
            best = (depth, current)
        stack.extend((child, depth + 1) for child in reversed(children(current)))
    return best


@dataclass(frozen=True)
class Formula:
    """A parsed formula: its statements in order, and the text it came from."""

    statements: tuple[Statement, ...]
    text: str = field(default="", compare=False)
