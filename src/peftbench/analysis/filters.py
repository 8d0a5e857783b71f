"""Safe filter expressions for the results table, e.g. `peft_type == "LORA" and test_accuracy > 0.4`.

User text is parsed with Python's `ast` module and walked against a whitelist: comparisons
(==, !=, <, <=, >, >=, in, not in) between column names and literals, combined with and, or,
not, & and |. `None` stands for a missing value: `x == None` keeps the rows where x is missing
(None or NaN), `x != None` the others, and `None` in an `in` list matches them too. Everything
else (attribute access, calls, subscripts, comprehensions, lambdas, dunder names, ...) is
refused with a message before anything is evaluated. Nothing is passed to `eval` or
`DataFrame.query`, which can run code.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd

from peftbench.errors import BadInput, did_you_mean

# Long enough for any hand-written filter; short enough that parsing stays instant.
MAX_LENGTH = 1000
# Bounds the recursion of the walk below (and of the evaluation), whatever the input.
MAX_NODES = 300
MAX_DEPTH = 40

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_OP_TEXT = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_LITERAL_TYPES = (str, int, float, bool, type(None))
ALLOWED = "comparisons (==, !=, <, <=, >, >=, in, not in) of columns and literals with and, or, not, &, |"


def _refuse(what: str, expr: str) -> BadInput:
    return BadInput(f"filter {_short(expr)}: {what}; allowed: {ALLOWED}")


def _short(expr: str) -> str:
    return repr(expr if len(expr) <= 60 else expr[:57] + "...")


def parse_filter(expr: str, columns: list[str] | pd.Index) -> ast.expr:
    """Parse and check `expr` against the whitelist and the known `columns`; return its AST body.

    Raises BadInput with one line saying what is not allowed. Evaluates nothing.
    """
    if not isinstance(expr, str):
        raise BadInput(f"filter must be text, got {type(expr).__name__}")
    if len(expr) > MAX_LENGTH:
        raise BadInput(f"filter is {len(expr)} characters long; at most {MAX_LENGTH} are allowed")
    try:
        with warnings.catch_warnings():
            # e.g. "invalid decimal literal" for "1in": user text should not print warnings on the server
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise _refuse(f"not a valid expression ({exc.msg})", expr) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # ValueError: NUL bytes; RecursionError/MemoryError: pathological nesting inside the parser
        raise _refuse(f"cannot be parsed ({type(exc).__name__})", expr) from None
    for count, _ in enumerate(ast.walk(tree), start=1):
        if count > MAX_NODES:
            raise _refuse(f"too complex (more than {MAX_NODES} syntax nodes)", expr)
    _check(tree.body, expr=expr, columns=set(columns), depth=0)
    return tree.body


def _check(node: ast.AST, *, expr: str, columns: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _refuse(f"nested more than {MAX_DEPTH} levels deep", expr)
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, expr=expr, columns=columns, depth=depth + 1)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
        _check(node.left, expr=expr, columns=columns, depth=depth + 1)
        _check(node.right, expr=expr, columns=columns, depth=depth + 1)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
        _check(node.operand, expr=expr, columns=columns, depth=depth + 1)
    elif isinstance(node, ast.Compare):
        _check_compare(node, expr=expr, columns=columns)
    elif isinstance(node, ast.UnaryOp):
        raise _refuse(_describe(node), expr)  # the sign's own message says what is allowed
    else:
        raise _refuse(f"{_describe(node)} is not allowed here", expr)


def _check_compare(node: ast.Compare, *, expr: str, columns: set[str]) -> None:
    # `a >= 0.4 & b < 0.2` parses as `a >= (0.4 & b) < 0.2`: & and | bind tighter than comparisons
    if any(
        isinstance(side, ast.BinOp) and isinstance(side.op, ast.BitAnd | ast.BitOr)
        for side in [node.left, *node.comparators]
    ):
        raise _refuse(
            "& and | bind tighter than comparisons, so they cannot join unbracketed comparisons: "
            "write `a >= 0.4 and b < 0.2` or `(a >= 0.4) & (b < 0.2)`",
            expr,
        )
    if len(node.ops) != 1:
        raise _refuse("chained comparisons (a < x < b) are not supported: write a < x and x < b", expr)
    op = node.ops[0]
    left, right = node.left, node.comparators[0]
    if isinstance(op, ast.In | ast.NotIn):
        _check_name(left, expr=expr, columns=columns, role=f"left of '{_OP_TEXT[type(op)]}'")
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise _refuse(f"right of '{_OP_TEXT[type(op)]}' must be a list of literals, like [1, 2]", expr)
        for element in right.elts:
            _literal(element, expr=expr)
        return
    if isinstance(op, ast.Is | ast.IsNot):
        raise _refuse("'is' is not supported: write x == None or x != None for a missing value", expr)
    if type(op) not in _COMPARE:
        raise _refuse(f"operator {type(op).__name__} is not allowed", expr)
    for side in (left, right):
        if isinstance(side, ast.Name):
            _check_name(side, expr=expr, columns=columns, role="comparison")
        else:
            _literal(side, expr=expr)
    if not any(isinstance(side, ast.Name) for side in (left, right)):
        raise _refuse("a comparison needs a column name on at least one side", expr)
    if (_is_none(left) or _is_none(right)) and not isinstance(op, ast.Eq | ast.NotEq):
        raise _refuse(
            f"None (a missing value) can only be compared with == or !=, not {_OP_TEXT[type(op)]}", expr
        )


def _check_name(node: ast.AST, *, expr: str, columns: set[str], role: str) -> None:
    if not isinstance(node, ast.Name):
        raise _refuse(f"{role} must be a column name, not {_describe(node)}", expr)
    name = node.id
    if name.startswith("__") or name.endswith("__"):
        raise _refuse(f"dunder name {name!r} is not allowed", expr)
    if name not in columns:
        raise BadInput(f'filter {_short(expr)}: unknown column "{name}"{did_you_mean(name, columns)}')


def _literal(node: ast.AST, *, expr: str) -> Any:
    """The value of a literal: a constant, or a negated number (`-1.5` is UnaryOp(USub, 1.5) in the AST)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, _LITERAL_TYPES):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = node.operand
        if not (isinstance(operand, ast.Constant) and type(operand.value) in (int, float)):
            raise _refuse(_describe(node), expr)
        return -operand.value if isinstance(node.op, ast.USub) else operand.value
    raise _refuse(f"{_describe(node)} is not a literal (numbers, strings, True, False, None)", expr)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Call: "a function call",
        ast.Subscript: "indexing",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.Name: "a bare column name",
        ast.Constant: "a bare literal",
        ast.NamedExpr: "an assignment expression",
        ast.IfExp: "a conditional expression",
        ast.Starred: "unpacking",
        ast.JoinedStr: "an f-string",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
    }
    if isinstance(node, ast.BinOp):
        return f"arithmetic ({type(node.op).__name__})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = "-" if isinstance(node.op, ast.USub) else "+"
        operand = node.operand
        if isinstance(operand, ast.Name):
            what = f"column {operand.id}"
        else:
            what = repr(operand.value) if isinstance(operand, ast.Constant) else _describe(operand)
        return (
            f"a sign ({sign}) applies to number literals only, not to {what} (write seed < -1, not -seed > 1)"
        )
    return names.get(type(node), type(node).__name__)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def filter_mask(df: pd.DataFrame, expr: str) -> pd.Series:
    """Boolean mask of the rows of `df` that satisfy `expr`; an empty expression keeps every row."""
    if expr is None or not str(expr).strip():
        return pd.Series(True, index=df.index)
    body = parse_filter(expr, df.columns)
    try:
        mask = _evaluate(body, df)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"filter {_short(expr)}: a value does not match its column's type ({exc})") from None
    # NaN compares False: a run without a metric does not pass a filter on it.
    return pd.Series(mask, index=df.index).fillna(False).astype(bool)


def apply_filter(df: pd.DataFrame, expr: str) -> pd.DataFrame:
    """The rows of `df` that satisfy the filter expression `expr` (see `parse_filter`)."""
    return df[filter_mask(df, expr)]


def _evaluate(node: ast.AST, df: pd.DataFrame) -> pd.Series:
    # Only node shapes that _check accepted reach this point.
    if isinstance(node, ast.BoolOp):
        parts = [_evaluate(v, df) for v in node.values]
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if isinstance(node.op, ast.And) else (result | part)
        return result
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, df), _evaluate(node.right, df)
        return (left & right) if isinstance(node.op, ast.BitAnd) else (left | right)
    if isinstance(node, ast.UnaryOp):
        return ~_evaluate(node.operand, df).astype(bool)
    assert isinstance(node, ast.Compare)
    op, left, right = node.ops[0], node.left, node.comparators[0]
    if isinstance(op, ast.In | ast.NotIn):
        values = [_literal(e, expr="") for e in right.elts]
        inside = df[left.id].isin([v for v in values if v is not None])
        if None in values:
            inside |= df[left.id].isna()
        return inside if isinstance(op, ast.In) else ~inside
    if _is_none(left) or _is_none(right):
        column = df[(right if _is_none(left) else left).id]
        return column.isna() if isinstance(op, ast.Eq) else column.notna()
    lhs = df[left.id] if isinstance(left, ast.Name) else _literal(left, expr="")
    rhs = df[right.id] if isinstance(right, ast.Name) else _literal(right, expr="")
    result = _COMPARE[type(op)](lhs, rhs)
    return result.fillna(False).astype(bool) if hasattr(result, "fillna") else result
