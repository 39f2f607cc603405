"""A safe, bounded parser and exact evaluator for Countdown equations.

Model output is untrusted, so nothing here calls eval/exec/compile: a hand-written tokenizer and
a recursive-descent parser accept only ASCII integer literals, + - * / (and the aliases × ÷ −),
parentheses and ASCII whitespace. Decimals and powers are always rejected. Size limits are
checked before parsing (length, token count, paren depth), so recursion depth is always small and
hostile inputs are rejected in time linear in the (capped) input length. Values are exact Fractions.

Unary minus is off by default and enabled with `parse(text, unary_minus=True)`, which then follows
Python's (so TinyZero's eval-based) grammar for it: a '-' (or '−') where an operand is expected
negates the following factor, binding tighter than * and / (`-3 * 5`, `10 + -(5 + 2)`, `3 - -2`),
and repeats (`--3` is 3). A run of unary minuses is read in a loop, not by recursion, and every
unary minus counts as a token (MAX_TOKENS) and as one nesting level together with parentheses
(MAX_DEPTH), so `- - - ... 3` stays bounded. Unary plus (`+3`, `3 * +5`) is rejected in both modes
although Python accepts it: it never changes a value, and keeping it out leaves the option meaning
exactly one thing.

Every problem raises `ArithmeticParseError` (a ValueError) with a short message.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

MAX_CHARS = 512  # longest equation text accepted
MAX_TOKENS = 64  # numbers + operators + parentheses
MAX_DEPTH = 32  # parenthesis nesting (unary minuses count too)
MAX_LITERAL_DIGITS = 12  # keeps every literal (and so every value) small

_OPS = {"+": "+", "-": "-", "*": "*", "/": "/", "×": "*", "÷": "/", "−": "-"}
_WHITESPACE = " \t\r\n\f\v"


class ArithmeticParseError(ValueError):
    """The text is not an acceptable equation, or it cannot be evaluated (division by zero)."""


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg:
    operand: Expr


Expr = Num | BinOp | Neg


def tokenize(text: str) -> list[str | int]:
    """Split text into ints and the one-character tokens + - * / ( ); enforce all size limits."""
    if len(text) > MAX_CHARS:
        raise ArithmeticParseError(f"equation longer than {MAX_CHARS} characters")
    tokens: list[str | int] = []
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
            continue
        if "0" <= c <= "9":  # explicit ASCII check: str.isdigit() also accepts '３', '٣', ...
            j = i
            while j < n and "0" <= text[j] <= "9":
                j += 1
            if j - i > MAX_LITERAL_DIGITS:
                raise ArithmeticParseError(f"number longer than {MAX_LITERAL_DIGITS} digits")
            if j < n and text[j] == ".":
                raise ArithmeticParseError("decimals are not allowed")
            tokens.append(int(text[i:j]))
            i = j
        elif c in _OPS:
            if c == "*" and text[i + 1 : i + 2] == "*":
                raise ArithmeticParseError("forbidden token '**'")
            tokens.append(_OPS[c])
            i += 1
        elif c in "()":
            depth += 1 if c == "(" else -1
            if depth > MAX_DEPTH:
                raise ArithmeticParseError(f"parentheses nested deeper than {MAX_DEPTH}")
            if depth < 0:
                raise ArithmeticParseError("unbalanced ')'")
            tokens.append(c)
            i += 1
        elif c == "^":
            raise ArithmeticParseError("forbidden token '^'")
        else:
            raise ArithmeticParseError(f"unexpected character {c!r}")
        if len(tokens) > MAX_TOKENS:
            raise ArithmeticParseError(f"more than {MAX_TOKENS} tokens")
    if depth != 0:
        raise ArithmeticParseError("unbalanced '('")
    if not tokens:
        raise ArithmeticParseError("empty equation")
    return tokens


class _Parser:
    """Recursive descent over a pre-checked token list (depth is bounded by MAX_DEPTH/MAX_TOKENS)."""

    def __init__(self, tokens: list[str | int], unary_minus: bool = False):
        self.tokens = tokens
        self.pos = 0
        self.unary_minus = unary_minus
        self.depth = 0  # open parentheses plus pending unary minuses

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def nest(self, levels: int) -> None:
        self.depth += levels
        if self.depth > MAX_DEPTH:  # only reachable through unary minuses: tokenize bounds parentheses alone
            raise ArithmeticParseError(f"parentheses and unary minuses nested deeper than {MAX_DEPTH}")

    def expr(self) -> Expr:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            node = BinOp(op, node, self.term())  # type: ignore[arg-type]
        return node

    def term(self) -> Expr:
        node = self.factor()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            node = BinOp(op, node, self.factor())  # type: ignore[arg-type]
        return node

    def factor(self) -> Expr:
        minuses = 0
        while self.unary_minus and self.peek() == "-":  # a loop, not recursion: long runs cost no stack
            minuses += 1
            self.pos += 1
        self.nest(minuses)
        node = self.atom()
        self.depth -= minuses
        for _ in range(minuses):
            node = Neg(node)
        return node

    def atom(self) -> Expr:
        tok = self.peek()
        if isinstance(tok, int):
            self.pos += 1
            return Num(tok)
        if tok == "(":
            self.pos += 1
            self.nest(1)
            node = self.expr()
            if self.peek() != ")":
                raise ArithmeticParseError("expected ')'")
            self.pos += 1
            self.depth -= 1
            return node
        if tok == "-":
            raise ArithmeticParseError("unary minus is not allowed")
        if tok is None:
            raise ArithmeticParseError("unexpected end of equation")
        raise ArithmeticParseError(f"unexpected {tok!r}")


def parse(text: str, unary_minus: bool = False) -> Expr:
    """Parse an equation into an expression tree; raise ArithmeticParseError if not acceptable.

    unary_minus: accept a '-' that negates a factor (see the module docstring); off, it is an error.
    """
    parser = _Parser(tokenize(text), unary_minus)
    node = parser.expr()
    if parser.pos != len(parser.tokens):
        raise ArithmeticParseError(f"unexpected {parser.tokens[parser.pos]!r}")
    return node


def literals(expr: Expr) -> list[int]:
    """The integer literals of the expression, left to right."""
    if isinstance(expr, Num):
        return [expr.value]
    if isinstance(expr, Neg):  # the literal itself, unsigned: `-3` uses the number 3 (as TinyZero's \d+)
        return literals(expr.operand)
    return literals(expr.left) + literals(expr.right)


def evaluate(expr: Expr) -> Fraction:
    """Exact value of the expression; division by zero raises ArithmeticParseError."""
    if isinstance(expr, Num):
        return Fraction(expr.value)
    if isinstance(expr, Neg):
        return -evaluate(expr.operand)
    a, b = evaluate(expr.left), evaluate(expr.right)
    if expr.op == "+":
        return a + b
    if expr.op == "-":
        return a - b
    if expr.op == "*":
        return a * b
    if b == 0:
        raise ArithmeticParseError("division by zero")
    return a / b
