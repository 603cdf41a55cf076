"""`${...}` expressions in block parameters: a small, safe evaluator (never `eval`).

A block's layers compute their arguments from the block's parameters:
`filters: "${4 * filters}"`, `strides: "${2 if index == 1 else 1}"`. The text inside
`${}` is parsed with Python's own grammar (`ast.parse`) and then *interpreted* here over a
whitelist of node types: numbers, strings, booleans, names of parameters, arithmetic,
comparisons, and/or/not, `a if c else b`, and a few pure functions. Anything else (an
attribute, a subscript, a lambda, an unknown function) is refused with a message, so a
spec can never run code. Every value it can build is bounded before it is built (numbers,
powers, the length of texts and lists; %-formatting is refused) and so is the nesting, so a
spec cannot make the evaluator spend unbounded time or memory either.

Strings work as in Python: `'a' + name`, `name * 2`, comparisons, and `${...}` inside longer
text interpolates (`conv${index}`); booleans read as YAML spells them (`true`, `false`).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

MAX_LENGTH = 500  # characters of one expression
MAX_MAGNITUDE = 10**15  # no layer argument is anywhere near this; keeps ** cheap
MAX_ITEMS = 1_000  # characters of a text value, items of a list: names and kernel sizes are short
MAX_DEPTH = 40  # nesting of one expression (`- - - 1`, parentheses): deeper is not arithmetic anyone writes

FUNCTIONS = {
    "min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round,
    "ceil": math.ceil, "floor": math.floor,
}

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}

WHOLE = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
PART = re.compile(r"\$\{([^{}]*)\}")


class ExpressionError(ValueError):
    """An expression that cannot be evaluated; `path` is where it sits inside the value."""

    def __init__(self, message: str, path: tuple = ()):
        super().__init__(message)
        self.path = path


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def substitute(value: Any, names: dict[str, Any], path: tuple = ()) -> Any:
    """`value` with every `${...}` evaluated: a string that is one whole expression becomes
    its value (a number stays a number); expressions inside longer text are interpolated.
    Lists and mappings are walked; ExpressionError.path says where a failure was."""
    if isinstance(value, str) and "${" in value:
        whole = WHOLE.match(value)
        if whole and "${" not in whole.group(1):
            return evaluate(whole.group(1), names, path)
        return _interpolate(value, names, path)
    if isinstance(value, list):
        return [substitute(item, names, (*path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: substitute(item, names, (*path, key)) for key, item in value.items()}
    return value


def _interpolate(value: str, names: dict[str, Any], path: tuple) -> str:
    """Text with each `${...}` replaced by its value, the result bounded as it grows."""
    parts, size, end = [], 0, 0
    for match in PART.finditer(value):
        try:  # a parameter can hold a long YAML list: refuse it before it becomes text
            part = _bounded(evaluate(match.group(1), names, path))
        except ExpressionError as exc:
            raise ExpressionError(f"in '${{{match.group(1).strip()[:60]}}}': {exc}", path) from None
        piece = value[end:match.start()] + text_of(part)
        size += len(piece)
        if size > MAX_ITEMS:
            raise ExpressionError(f"the text would be longer than {MAX_ITEMS:,} characters", path)
        parts.append(piece)
        end = match.end()
    return "".join(parts) + value[end:]


def text_of(value: Any) -> str:
    """A value as it reads inside text: booleans in YAML's spelling."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def evaluate(text: str, names: dict[str, Any], path: tuple = ()) -> Any:
    """The value of one expression over `names`; ExpressionError for anything not allowed."""
    source = text.strip()
    if not source:
        raise ExpressionError("empty expression '${}'", path)
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", path)
    shown = _cut(source, 80)  # messages quote the expression, never 500 characters of it
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse '${{{shown}}}': {exc.msg}", path) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"'${{{shown}}}' is nested too deeply", path) from None
    if _depth(tree.body) > MAX_DEPTH:
        raise ExpressionError(f"'${{{shown}}}' is nested more than {MAX_DEPTH} deep", path)
    try:
        return _Interpreter(names).visit(tree.body)
    except ExpressionError as exc:
        raise ExpressionError(f"in '${{{shown}}}': {exc}", path) from None
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ExpressionError(f"in '${{{shown}}}': {_cut(str(exc))}", path) from None


def _depth(node: ast.AST) -> int:
    """How deeply `node` nests, counted without recursion (the evaluator recurses)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Interpreter(ast.NodeVisitor):
    def __init__(self, names: dict[str, Any]):
        self.names = names

    def generic_visit(self, node: ast.AST) -> Any:
        raise ExpressionError(f"{type(node).__name__.lower()} is not allowed (only numbers, parameters, "
                              "arithmetic, comparisons, and/or/not, 'a if c else b' and "
                              f"{', '.join(FUNCTIONS)})")

    def visit_Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, (int, float, str, bool)) or node.value is None:
            return _bounded(node.value)
        raise ExpressionError(f"constant {node.value!r} is not allowed")

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("true", "false"):
            return node.id == "true"  # YAML's spelling
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        from cnncompile.language.diagnostics import did_you_mean

        known = ", ".join(sorted(self.names)) or "none"
        raise ExpressionError(f"unknown name '{node.id}'{did_you_mean(node.id, self.names)} "
                              f"(known here: {known})")

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            return self.generic_visit(node)
        left, right = self.visit(node.left), self.visit(node.right)
        if op is operator.pow and isinstance(right, (int, float)) and abs(right) > 64:
            raise ExpressionError(f"exponent {right} is too large")
        if op is operator.mod and isinstance(left, str):
            raise ExpressionError("%-formatting is not allowed; write ${...} inside the text instead")
        _check_size(op, left, right)
        return _bounded(op(left, right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        return op(self.visit(node.operand)) if op else self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        if isinstance(node.op, ast.And):
            result = True
            for value in node.values:
                result = self.visit(value)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = self.visit(value)
            if result:
                return result
        return result

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(op_node))
            if op is None:
                return self.generic_visit(op_node)
            right = self.visit(right_node)
            if not op(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError(f"function '{_cut(ast.unparse(node.func), 60)}' is not allowed; "
                                  f"available: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ExpressionError(f"{node.func.id}() takes no keyword arguments here "
                                  f"(received {', '.join(str(k.arg) for k in node.keywords)})")
        return _bounded(FUNCTIONS[node.func.id](*(self.visit(arg) for arg in node.args)))

    def visit_List(self, node: ast.List) -> Any:
        return _bounded([self.visit(item) for item in node.elts])


def _check_size(op: Any, left: Any, right: Any) -> None:
    """Refuse a text or list that would be too long *before* building it ('x' * 10**10)."""
    sequences = (str, list)
    if op is operator.mul and isinstance(left, int) and isinstance(right, sequences):
        left, right = right, left
    if op is operator.mul and isinstance(left, sequences) and isinstance(right, int):
        size = len(left) * right
    elif op is operator.add and isinstance(left, sequences) and isinstance(right, sequences):
        size = len(left) + len(right)
    else:
        return
    if size > MAX_ITEMS:
        raise ExpressionError(f"the {_noun(left)} would be longer than {MAX_ITEMS:,} "
                              f"{'characters' if isinstance(left, str) else 'items'}")


def _noun(value: Any) -> str:
    return "text" if isinstance(value, str) else "list"


def _bounded(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
        raise ExpressionError(f"value {value:.3g} is out of range (at most {MAX_MAGNITUDE:.0e})")
    if isinstance(value, (str, list)) and len(value) > MAX_ITEMS:
        raise ExpressionError(f"the {_noun(value)} is longer than {MAX_ITEMS:,} "
                              f"{'characters' if isinstance(value, str) else 'items'}")
    return value
