"""The catalog's filter language: one small, safe expression parser shared by every reader.

The training loader (`data.filter`), dataset versions and `mvideo view` all select clips with
`apply_filter`, so the viewer's count and the loader's samples come from the same code. Nothing is
ever evaluated as Python: the text is tokenised and parsed here into a tree of a few node kinds,
then evaluated column-wise over the joined catalog with pandas.

Grammar (lowest precedence first):

    expr       := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                      | ["not"] "in" "[" literal ("," literal)* "]"
                      | "contains" sum
                      | "is" ["not"] "null"]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := number | 'text' | "text" | true | false | column | `any column name`
                | ("len" | "abs" | "lower") "(" expr ")" | "(" expr ")"

Examples: `duration_s >= 3 and aesthetic_score > 0.5`, `caption contains "dog"`,
`lower(source) contains "megamind" or num_frames in [24, 48]`, `ocr_text is null`.

A clip with no value in a column (a feature set that does not cover it) matches no comparison on
that column, `!=` included; select such clips with `is null`. Mistakes (an unknown column, text
compared with a number, a condition that is not one) raise FilterError naming the column.
"""
from __future__ import annotations

import difflib
import functools
import operator
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

KEYWORDS = {"and", "or", "not", "in", "contains", "is", "null", "true", "false"}
FUNCTIONS = {"len", "abs", "lower"}
COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)
  | (?P<text>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)
""", re.VERBOSE)


class FilterError(ValueError):
    """A filter expression that cannot be parsed or applied; the message names the column at fault."""


@dataclass(frozen=True)
class Token:
    kind: str  # number | text | name | column | op | end
    value: object
    at: int


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            hint = " (write == to compare)" if text[position] == "=" else ""
            raise FilterError(f"unexpected '{text[position]}' at character {position + 1}{hint}")
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            tokens.append(Token("number", float(raw) if any(c in raw for c in ".eE") else int(raw), position))
        elif kind == "text":
            tokens.append(Token("text", re.sub(r"\\(.)", r"\1", raw[1:-1]), position))
        elif kind == "quoted":
            tokens.append(Token("column", raw[1:-1], position))
        elif kind == "name":
            tokens.append(Token("name" if raw.lower() in KEYWORDS | FUNCTIONS else "column",
                                raw.lower() if raw.lower() in KEYWORDS | FUNCTIONS else raw, position))
        elif kind == "op":
            tokens.append(Token("op", raw, position))
        position = match.end()
    tokens.append(Token("end", None, len(text)))
    return tokens


# Nodes of the parsed tree: plain tuples whose first item names the kind.
#   ("literal", value) ("column", name) ("neg", node) ("arith", op, a, b) ("compare", op, a, b)
#   ("in", node, values, negated) ("contains", a, b) ("isnull", node, negated) ("not", node)
#   ("and", a, b) ("or", a, b) ("call", function, node)


class _Parser:
    def __init__(self, text: str):
        self.tokens, self.index = tokenize(text), 0

    def peek(self, kind: str, value: object = None) -> bool:
        token = self.tokens[self.index]
        return token.kind == kind and (value is None or token.value == value)

    def take(self, kind: str, value: object = None) -> Token:
        token = self.tokens[self.index]
        if not self.peek(kind, value):
            wanted = f"'{value}'" if value is not None else kind
            found = "the end" if token.kind == "end" else f"'{token.value}'"
            raise FilterError(f"expected {wanted} at character {token.at + 1}, found {found}")
        self.index += 1
        return token

    def accept(self, kind: str, value: object = None) -> bool:
        if self.peek(kind, value):
            self.index += 1
            return True
        return False

    def parse(self) -> tuple:
        node = self.expr()
        self.take("end")
        return node

    def expr(self) -> tuple:
        node = self.conjunction()
        while self.accept("name", "or"):
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> tuple:
        node = self.negation()
        while self.accept("name", "and"):
            node = ("and", node, self.negation())
        return node

    def negation(self) -> tuple:
        if self.accept("name", "not"):
            return ("not", self.negation())
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.sum()
        token = self.tokens[self.index]
        if token.kind == "op" and token.value in COMPARISONS:
            self.index += 1
            return ("compare", token.value, left, self.sum())
        if self.accept("name", "contains"):
            return ("contains", left, self.sum())
        if self.accept("name", "is"):
            negated = self.accept("name", "not")
            self.take("name", "null")
            return ("isnull", left, negated)
        negated = self.peek("name", "not") and self.tokens[self.index + 1].value == "in"
        if negated:
            self.index += 1
        if self.accept("name", "in"):
            return ("in", left, self.literal_list(), negated)
        return left

    def literal_list(self) -> list:
        self.take("op", "[")
        values = [self.literal()]
        while self.accept("op", ","):
            values.append(self.literal())
        self.take("op", "]")
        return values

    def literal(self) -> object:
        negative = self.accept("op", "-")
        token = self.tokens[self.index]
        if token.kind == "number" or (token.kind == "text" and not negative):
            self.index += 1
            return -token.value if negative else token.value
        if token.kind == "name" and token.value in ("true", "false") and not negative:
            self.index += 1
            return token.value == "true"
        raise FilterError(f"expected a number, text, true or false in the list at character {token.at + 1}")

    def sum(self) -> tuple:
        node = self.product()
        while self.peek("op", "+") or self.peek("op", "-"):
            node = ("arith", self.take("op").value, node, self.product())
        return node

    def product(self) -> tuple:
        node = self.unary()
        while self.peek("op", "*") or self.peek("op", "/"):
            node = ("arith", self.take("op").value, node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.accept("op", "-"):
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> tuple:
        token = self.tokens[self.index]
        if token.kind in ("number", "text"):
            self.index += 1
            return ("literal", token.value)
        if token.kind == "column":
            self.index += 1
            return ("column", token.value)
        if token.kind == "name" and token.value in ("true", "false"):
            self.index += 1
            return ("literal", token.value == "true")
        if token.kind == "name" and token.value in FUNCTIONS:
            self.index += 1
            self.take("op", "(")
            argument = self.expr()
            self.take("op", ")")
            return ("call", token.value, argument)
        if self.accept("op", "("):
            node = self.expr()
            self.take("op", ")")
            return node
        found = "the end" if token.kind == "end" else f"'{token.value}'"
        raise FilterError(f"expected a column, number or text at character {token.at + 1}, found {found}")


def parse_filter(text: str) -> tuple:
    """The parsed tree of a filter expression (raises FilterError on a syntax error)."""
    return _Parser(text).parse()


@dataclass
class _Value:
    """An evaluated operand: a Series over the catalog's rows or a scalar, and what it came from."""

    data: object
    label: str  # "column 'x'", "len(column 'x')", "the number 3", ...

    @functools.cached_property
    def kind(self) -> str:
        """number | text | bool | null (no value in any row: compatible with every kind) | other."""
        if not isinstance(self.data, pd.Series):
            return {bool: "bool", str: "text"}.get(type(self.data), "number")
        if not self.data.notna().any():
            return "null"
        if pd.api.types.is_bool_dtype(self.data):
            return "bool"
        if pd.api.types.is_numeric_dtype(self.data):
            return "number"
        inferred = pd.api.types.infer_dtype(self.data, skipna=True)
        return {"string": "text", "boolean": "bool", "integer": "number", "floating": "number",
                "mixed-integer-float": "number"}.get(inferred, "other")

    def present(self, index: pd.Index) -> pd.Series:
        if isinstance(self.data, pd.Series):
            return self.data.notna()
        return pd.Series(True, index=index)


HOLDS = {"number": "numbers", "text": "text", "bool": "true/false values", "other": "lists or mixed values"}


def _require(value: _Value, kinds: tuple[str, ...], what: str) -> None:
    if value.kind not in (*kinds, "null"):
        raise FilterError(f"{value.label} holds {HOLDS[value.kind]}; {what}")


def _as_condition(value: _Value, index: pd.Index, where: str) -> pd.Series:
    _require(value, ("bool",), f"{where} needs a condition (a comparison or a true/false column)")
    if not isinstance(value.data, pd.Series):
        return pd.Series(bool(value.data), index=index)
    return value.data.where(value.data.notna(), False).astype(bool)


class _Evaluator:
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def column(self, name: str) -> _Value:
        if name not in self.frame.columns:
            known = list(map(str, self.frame.columns))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise FilterError(f"unknown column '{name}'{hint}; columns: {', '.join(known)}")
        series = self.frame[name]
        # A column without any value (a feature set that covers none of these clips) behaves as
        # missing numbers: it matches no comparison, whatever it is compared with.
        return _Value(series if series.notna().any() else series.astype("float64"), f"column '{name}'")

    def value(self, node: tuple) -> _Value:
        kind = node[0]
        if kind == "literal":
            literal = node[1]
            return _Value(literal, f"the text '{literal}'" if isinstance(literal, str) else f"the value {literal}")
        if kind == "column":
            return self.column(node[1])
        if kind == "neg":
            operand = self.value(node[1])
            _require(operand, ("number",), "'-' needs a number")
            return _Value(-operand.data, f"-{operand.label}")
        if kind == "arith":
            left, right = self.value(node[2]), self.value(node[3])
            for side in (left, right):
                _require(side, ("number",), f"'{node[1]}' needs numbers")
            with np.errstate(divide="ignore", invalid="ignore"):
                result = ARITHMETIC[node[1]](left.data, right.data)
            return _Value(result, f"({left.label} {node[1]} {right.label})")
        if kind == "call":
            return self.call(node[1], self.value(node[2]))
        return _Value(self.condition(node), "a condition")

    def call(self, function: str, argument: _Value) -> _Value:
        label = f"{function}({argument.label})"
        if function == "abs":
            _require(argument, ("number",), "abs() needs a number")
            return _Value(abs(argument.data), label)
        _require(argument, ("text",), f"{function}() needs text")
        if not isinstance(argument.data, pd.Series):
            return _Value(len(argument.data) if function == "len" else argument.data.lower(), label)
        text = argument.data.astype("string")
        if function == "len":
            return _Value(text.str.len().astype("float64"), label)
        return _Value(text.str.lower().astype(object).where(argument.data.notna(), None), label)

    def condition(self, node: tuple) -> pd.Series:
        kind, index = node[0], self.frame.index
        if kind in ("and", "or"):
            left = _as_condition(self.value(node[1]), index, f"'{kind}'")
            right = _as_condition(self.value(node[2]), index, f"'{kind}'")
            return (left & right) if kind == "and" else (left | right)
        if kind == "not":
            return ~_as_condition(self.value(node[1]), index, "'not'")
        if kind == "isnull":
            operand = self.value(node[1])
            missing = ~operand.present(index)
            return ~missing if node[2] else missing
        if kind == "in":
            operand = self.value(node[1])
            for literal in node[2]:
                _require(operand, (_Value(literal, "").kind,), f"it cannot be compared with {literal!r}")
            series = operand.data if isinstance(operand.data, pd.Series) else pd.Series(operand.data, index=index)
            found = series.isin(node[2])
            return (~found if node[3] else found) & operand.present(index)
        if kind == "contains":
            haystack, needle = self.value(node[1]), self.value(node[2])
            _require(haystack, ("text",), "'contains' needs text on its left")
            _require(needle, ("text",), "'contains' needs text on its right")
            if isinstance(needle.data, pd.Series):
                raise FilterError("'contains' needs a fixed text on its right, not a column")
            text = haystack.data if isinstance(haystack.data, pd.Series) else pd.Series(haystack.data, index=index)
            return text.astype("string").str.contains(needle.data, regex=False).fillna(False).astype(bool)
        if kind == "compare":
            left, right = self.value(node[2]), self.value(node[3])
            kinds = {left.kind, right.kind} - {"null"}
            if len(kinds) > 1 or "other" in kinds:
                # Name the column, not the literal, when one side is a column.
                culprit, against = (right, left) if "column" in right.label and "column" not in left.label \
                    else (left, right)
                raise FilterError(f"{culprit.label} holds {HOLDS[culprit.kind]}; it cannot be compared "
                                  f"with {against.label}")
            if kinds == {"bool"} and node[1] not in ("==", "!="):
                raise FilterError(f"{left.label} holds true/false values; only == and != compare them")
            result = COMPARISONS[node[1]](left.data, right.data)
            if not isinstance(result, pd.Series):
                result = pd.Series(bool(result), index=index)
            return result.fillna(False).astype(bool) & left.present(index) & right.present(index)
        raise FilterError(f"unknown expression kind {kind}")


def evaluate_filter(frame: pd.DataFrame, text: str) -> pd.Series:
    """A boolean mask over `frame`'s rows: which rows the expression selects (all for empty text)."""
    if not text.strip():
        return pd.Series(True, index=frame.index)
    tree = parse_filter(text)
    evaluator = _Evaluator(frame)
    return _as_condition(evaluator.value(tree), frame.index, "a filter")
