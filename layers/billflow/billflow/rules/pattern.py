"""Criteria patterns such as `(1 AND 2) OR NOT 3`, parsed by a recursive-descent parser (never eval).

Grammar:  expr := term (OR term)* ; term := factor (AND factor)* ; factor := NOT factor | NUMBER | ( expr )
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Nesting deeper than any readable pattern is refused before the recursive parser could exhaust the stack.
MAX_DEPTH = 32
_TOKEN = re.compile(r"\s*(?:(\d+)|(AND\b|OR\b|NOT\b)|(\()|(\))|(\S))", re.IGNORECASE)


class PatternError(ValueError):
    def __init__(self, pattern: str, position: int, reason: str) -> None:
        shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."  # a hostile pattern can be huge
        super().__init__(f"pattern {shown!r}, position {position + 1}: {reason}")
        self.pattern = pattern
        self.position = position
        self.reason = reason


@dataclass(frozen=True)
class Node:
    op: str  # "num", "and", "or", "not"
    children: tuple[Node, ...] = ()
    number: int = 0

    def evaluate(self, truth: Callable[[int], bool]) -> bool:
        if self.op == "num":
            return truth(self.number)
        if self.op == "not":
            return not self.children[0].evaluate(truth)
        if self.op == "and":
            return all(c.evaluate(truth) for c in self.children)
        return any(c.evaluate(truth) for c in self.children)

    def numbers(self) -> set[int]:
        if self.op == "num":
            return {self.number}
        return set().union(*(c.numbers() for c in self.children))


def _tokens(pattern: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(pattern):
        if pattern[pos:].strip() == "":
            break
        m = _TOKEN.match(pattern, pos)
        if m is None:  # pragma: no cover - the last alternative matches any non-space
            raise PatternError(pattern, pos, "unexpected text")
        start = m.start(m.lastindex or 0)
        if m.group(1):
            out.append(("num", m.group(1), start))
        elif m.group(2):
            out.append((m.group(2).upper(), m.group(2), start))
        elif m.group(3):
            out.append(("(", "(", start))
        elif m.group(4):
            out.append((")", ")", start))
        else:
            raise PatternError(pattern, start, f"unexpected {m.group(5)!r}; use numbers, AND, OR, NOT, ( )")
        pos = m.end()
    return out


def parse_pattern(pattern: str, criteria_count: int) -> Node:
    tokens = _tokens(pattern)
    index = 0
    depth = 0

    def peek() -> tuple[str, str, int] | None:
        return tokens[index] if index < len(tokens) else None

    def expect_factor() -> Node:
        nonlocal index, depth
        tok = peek()
        if tok is None:
            raise PatternError(pattern, len(pattern), "ends where a criterion number or '(' was expected")
        kind, text, pos = tok
        if kind in ("NOT", "("):
            depth += 1
            if depth > MAX_DEPTH:
                raise PatternError(pattern, pos, f"nested more than {MAX_DEPTH} levels deep (parentheses and NOT)")
        if kind == "NOT":
            index += 1
            node = Node("not", (expect_factor(),))
            depth -= 1
            return node
        if kind == "num":
            index += 1
            number = int(text)
            if not 1 <= number <= criteria_count:
                raise PatternError(pattern, pos, f"criterion {number} does not exist (1..{criteria_count})")
            return Node("num", number=number)
        if kind == "(":
            index += 1
            inner = expr()
            closing = peek()
            if closing is None or closing[0] != ")":
                where = closing[2] if closing else len(pattern)
                raise PatternError(pattern, where, "missing ')'")
            index += 1
            depth -= 1
            return inner
        raise PatternError(pattern, pos, f"unexpected {text!r} where a criterion number or '(' was expected")

    def term() -> Node:
        nonlocal index
        parts = [expect_factor()]
        while (tok := peek()) is not None and tok[0] == "AND":
            index += 1
            parts.append(expect_factor())
        return parts[0] if len(parts) == 1 else Node("and", tuple(parts))

    def expr() -> Node:
        nonlocal index
        parts = [term()]
        while (tok := peek()) is not None and tok[0] == "OR":
            index += 1
            parts.append(term())
        return parts[0] if len(parts) == 1 else Node("or", tuple(parts))

    if not tokens:
        raise PatternError(pattern, 0, "empty pattern")
    tree = expr()
    if (tok := peek()) is not None:
        raise PatternError(pattern, tok[2], f"unexpected {tok[1]!r} after a complete expression")
    return tree


def default_pattern(criteria_count: int) -> Node:
    """No pattern given: every criterion must hold."""
    return Node("and", tuple(Node("num", number=i) for i in range(1, criteria_count + 1)))
