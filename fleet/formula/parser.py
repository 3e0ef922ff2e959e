"""Parse formula text into a syntax tree: recursive descent with precedence climbing.

Precedence, lowest first (binary operators associate to the left, ``?:`` to the right):

    ?:   ||   &&   == !=   < <= > >=   + -   * /   unary - !   call, .member, .Method()
"""

from __future__ import annotations

from fleet.formula import syntax as ast
from fleet.formula.lexer import Kind, Token, formula_error, tokenize
from fleet.formula.variables import CONSTANTS, READ_ONLY

#: Azure's limits: a formula of at most 8 KB and 100 statements.
MAX_BYTES = 8192
MAX_STATEMENTS = 100
#: How deeply expressions may nest (parentheses, operators, arguments) before fleet refuses.
MAX_DEPTH = 64
#: How deep an expression's tree may be, counting every operator of a chain such as
#: ``1 + 1 + ... + 1``, so that evaluating and printing it never exhausts Python's stack.
MAX_TREE_DEPTH = 150

#: Binary operators by precedence level, lowest first.
LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "/"),
)
PRECEDENCE = {op: level for level, ops in enumerate(LEVELS) for op in ops}


def parse(text: str) -> ast.Formula:
    """Return the syntax tree of ``text``.

    Raises BadInput (code InvalidAutoScaleFormula, field autoScaleFormula) naming the line
    and column of the first error, e.g. ``line 3, column 14: expected ')' but found ';'``.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise formula_error(f"the formula is longer than {MAX_BYTES} bytes", 1, 1)
    return _Parser(tokenize(text)).formula(text)


class _Parser:
    """One pass over the token list."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def at(self, *texts: str) -> bool:
        return self.token.kind is Kind.OP and self.token.text in texts

    def take(self) -> Token:
        token = self.token
        if token.kind is not Kind.END:
            self.index += 1
        return token

    def expect(self, text: str) -> Token:
        if not self.at(text):
            self.fail(f"expected {text!r} but found {self.token.describe()}")
        return self.take()

    def fail(self, message: str, token: Token | None = None) -> None:
        where = token or self.token
        raise formula_error(message, where.line, where.column)

    # statements

    def formula(self, text: str) -> ast.Formula:
        statements: list[ast.Statement] = []
        while self.token.kind is not Kind.END:
            if self.at(";"):
                self.take()
                continue
            if len(statements) == MAX_STATEMENTS:
                self.fail(f"a formula holds at most {MAX_STATEMENTS} statements")
            statements.append(self.statement())
            if self.at(";"):
                self.take()
            elif self.token.kind is not Kind.END and not self.token.newline_before:
                self.fail(f"expected ';' but found {self.token.describe()}")
        if not statements:
            self.fail("the formula has no statements")
        return ast.Formula(tuple(statements), text)

    def statement(self) -> ast.Statement:
        statement = self._statement()
        depth, deepest = ast.deepest(statement.value)
        if depth > MAX_TREE_DEPTH:
            raise formula_error(
                f"the expression is more than {MAX_TREE_DEPTH} operations deep",
                deepest.line,
                deepest.column,
            )
        return statement

    def _statement(self) -> ast.Statement:
        first = self.token
        following = self.tokens[self.index + 1]
        if first.kind is Kind.NAME and following.kind is Kind.OP and following.text == "=":
            if first.text in READ_ONLY:
                self.fail(f"{first.text} is a read-only service variable")
            if first.text in CONSTANTS:
                self.fail(f"{first.text} is a constant and cannot be assigned")
            self.take()
            self.take()
            value = self.expression()
            return ast.Assignment(first.text, value, line=first.line, column=first.column)
        return ast.ExprStatement(self.expression(), line=first.line, column=first.column)

    # expressions

    def expression(self) -> ast.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expressions nest more than {MAX_DEPTH} deep")
        try:
            return self.conditional()
        finally:
            self.depth -= 1

    def conditional(self) -> ast.Expr:
        condition = self.binary(0)
        if not self.at("?"):
            return condition
        self.take()
        then = self.expression()
        self.expect(":")
        otherwise = self.expression()
        return ast.Conditional(
            condition, then, otherwise, line=condition.line, column=condition.column
        )

    def binary(self, lowest: int) -> ast.Expr:
        """Precedence climbing: parse operators of level ``lowest`` and above."""
        left = self.unary()
        while self.token.kind is Kind.OP and PRECEDENCE.get(self.token.text, -1) >= lowest:
            op = self.take()
            right = self.binary(PRECEDENCE[op.text] + 1)
            left = ast.Binary(op.text, left, right, line=op.line, column=op.column)
        return left

    def unary(self) -> ast.Expr:
        if self.at("-", "!"):
            op = self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"expressions nest more than {MAX_DEPTH} deep", op)
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            return ast.Unary(op.text, operand, line=op.line, column=op.column)
        return self.postfix()

    def postfix(self) -> ast.Expr:
        node = self.primary()
        while self.at("."):
            dot = self.take()
            name = self.token
            if name.kind is not Kind.NAME or name.text.startswith("$"):
                self.fail(f"expected a member or method name after '.' but found {name.describe()}")
            self.take()
            if self.at("("):
                args = self.arguments()
                node = ast.MethodCall(node, name.text, args, line=dot.line, column=dot.column)
            else:
                node = ast.Member(node, name.text, line=dot.line, column=dot.column)
        return node

    def arguments(self) -> tuple[ast.Expr, ...]:
        self.expect("(")
        args: list[ast.Expr] = []
        if not self.at(")"):
            args.append(self.expression())
            while self.at(","):
                self.take()
                args.append(self.expression())
        self.expect(")")
        return tuple(args)

    def primary(self) -> ast.Expr:
        token = self.token
        where = {"line": token.line, "column": token.column}
        if token.kind is Kind.NUMBER:
            self.take()
            value = float(token.text)
            if value == float("inf"):
                self.fail(f"the number {token.text} is too large", token)
            return ast.Number(value, **where)
        if token.kind is Kind.STRING:
            self.take()
            return ast.String(token.text, **where)
        if token.kind is Kind.NAME:
            self.take()
            if self.at("("):
                if token.text.startswith("$"):
                    self.fail(f"{token.text} is a variable, not a function", token)
                return ast.Call(token.text, self.arguments(), **where)
            return ast.Name(token.text, **where)
        if self.at("("):
            self.take()
            inner = self.expression()
            self.expect(")")
            return inner
        self.fail(f"expected a value but found {token.describe()}")
        raise AssertionError("unreachable")
