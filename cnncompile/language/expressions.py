"""`${...}` expressions in block parameters: a small, safe evaluator (never `eval`).

A block's layers compute their arguments from the block's parameters:
`filters: "${4 * filters}"`, `strides: "${2 if index == 1 else 1}"`. The text inside
`${}` is parsed with Python's own grammar (`ast.parse`) and then *interpreted* here over a
whitelist of node types: numbers, strings, booleans, names of parameters, arithmetic,
comparisons, and/or/not, `a if c else b`, and a few pure functions. Anything else (an
attribute, a subscript, a lambda, an unknown function) is refused with a message, so a
spec can never run code. Powers and numbers are bounded, so a spec cannot make the
evaluator spend unbounded time or memory either.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

MAX_LENGTH = 500  # characters of one expression
MAX_MAGNITUDE = 10**15  # no layer argument is anywhere near this; keeps ** cheap

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
        return PART.sub(lambda m: text_of(evaluate(m.group(1), names, path)), value)
    if isinstance(value, list):
        return [substitute(item, names, (*path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: substitute(item, names, (*path, key)) for key, item in value.items()}
    return value


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
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse '${{{source}}}': {exc.msg}", path) from None
    try:
        return _Interpreter(names).visit(tree.body)
    except ExpressionError as exc:
        raise ExpressionError(f"in '${{{source}}}': {exc}", path) from None
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ExpressionError(f"in '${{{source}}}': {exc}", path) from None


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
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            name = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise ExpressionError(f"function '{name}' is not allowed; available: {', '.join(FUNCTIONS)}")
        return _bounded(FUNCTIONS[node.func.id](*(self.visit(arg) for arg in node.args)))

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(item) for item in node.elts]


def _bounded(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
        raise ExpressionError(f"value {value:.3g} is out of range (at most {MAX_MAGNITUDE:.0e})")
    return value
