"""Print a syntax tree back as formula text that parses to the same tree."""

from __future__ import annotations

from fleet.formula import syntax as ast
from fleet.formula.parser import PRECEDENCE
from fleet.formula.values import format_double

#: Binding strength above every binary operator: unary operators, then postfix and atoms.
_UNARY = len(PRECEDENCE) + 10
_POSTFIX = _UNARY + 1
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}


def format_formula(formula: ast.Formula) -> str:
    """Return ``formula`` as text, one statement a line, each ending in ``;``."""
    return "".join(f"{format_statement(s)};\n" for s in formula.statements)


def format_statement(statement: ast.Statement) -> str:
    """Return one statement as text, without its ``;``."""
    if isinstance(statement, ast.Assignment):
        return f"{statement.name} = {format_expr(statement.value)}"
    return format_expr(statement.value)


def format_expr(node: ast.Expr) -> str:
    """Return an expression as text, with only the parentheses its structure needs."""
    return _text(node)[0]


def _strength(op: str) -> int:
    return PRECEDENCE[op] + 1


def _wrap(node: ast.Expr, least: int) -> str:
    """The node's text, parenthesised if it binds less tightly than ``least``."""
    text, strength = _text(node)
    return text if strength >= least else f"({text})"


def _text(node: ast.Expr) -> tuple[str, int]:
    """Return (text, binding strength): 0 for ?:, 1.. for the binary levels, then higher."""
    if isinstance(node, ast.Number):
        return _number(node.value), _POSTFIX
    if isinstance(node, ast.String):
        return '"' + "".join(_ESCAPES.get(c, c) for c in node.value) + '"', _POSTFIX
    if isinstance(node, ast.Name):
        return node.name, _POSTFIX
    if isinstance(node, ast.Unary):
        return f"{node.op}{_wrap(node.operand, _UNARY)}", _UNARY
    if isinstance(node, ast.Binary):
        strength = _strength(node.op)
        left = _wrap(node.left, strength)
        right = _wrap(node.right, strength + 1)
        return f"{left} {node.op} {right}", strength
    if isinstance(node, ast.Conditional):
        condition = _wrap(node.condition, 1)
        return f"{condition} ? {format_expr(node.then)} : {format_expr(node.otherwise)}", 0
    if isinstance(node, ast.Call):
        return f"{node.function}({_arguments(node.args)})", _POSTFIX
    if isinstance(node, ast.Member):
        return f"{_wrap(node.target, _POSTFIX)}.{node.member}", _POSTFIX
    target = _wrap(node.target, _POSTFIX)
    return f"{target}.{node.method}({_arguments(node.args)})", _POSTFIX


def _arguments(args: tuple[ast.Expr, ...]) -> str:
    return ", ".join(format_expr(arg) for arg in args)


def _number(value: float) -> str:
    """A literal for a non-negative finite double (the parser makes no negative literals)."""
    text = format_double(value)
    if "e" in text or "E" in text:
        mantissa, exponent = text.lower().split("e")
        text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    if text.startswith("."):
        text = "0" + text
    return text
