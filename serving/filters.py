"""Marketer filters such as ``spend_365d > 100 and days_since_last_purchase < 60``.

The text is parsed by sqlglot into a syntax tree, every node is checked against a short list
(comparisons, ``and``/``or``/``not``, ``in``, ``between``, known column names, number and text
literals) and the tree is evaluated over a DataFrame with vectorised pandas operations. The
text is never executed as SQL and never passed to ``eval``.
"""

from __future__ import annotations

import operator

import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from portrait.errors import PortraitError

_COMPARISONS = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}


class FilterError(PortraitError):
    """A filter that does not parse, uses something not allowed, or names an unknown column."""


def parse_filter(text: str, columns: set[str]) -> exp.Expression:
    """Parse and check a filter; raise :class:`FilterError` saying what is wrong."""
    if not text or not text.strip():
        raise FilterError("the filter is empty")
    if ";" in text:
        raise FilterError("a filter is one condition; ';' is not allowed")
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except ParseError as exc:
        raise FilterError(f"cannot parse filter {text!r}: {str(exc).splitlines()[0]}") from None
    _check(tree, columns)
    return tree


def _check(node: exp.Expression, columns: set[str]) -> None:
    if isinstance(node, exp.Paren | exp.Not):
        _check(node.this, columns)
    elif isinstance(node, exp.And | exp.Or):
        _check(node.left, columns)
        _check(node.right, columns)
    elif isinstance(node, tuple(_COMPARISONS)):
        _operand(node.left, columns)
        _operand(node.right, columns)
    elif isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise FilterError("'in' takes a list of values, not a query")
        _operand(node.this, columns)
        for value in node.expressions:
            _literal(value)
    elif isinstance(node, exp.Between):
        _operand(node.this, columns)
        _literal(node.args["low"])
        _literal(node.args["high"])
    else:
        raise FilterError(
            f"{node.sql()!r} is not allowed in a filter: use comparisons (=, !=, <, <=, >, >=), "
            "and/or/not, in (...), between ... and ..., on column names and values"
        )


def _operand(node: exp.Expression, columns: set[str]) -> None:
    if isinstance(node, exp.Column):
        if node.table or not isinstance(node.this, exp.Identifier):
            raise FilterError(f"{node.sql()!r}: use a plain column name")
        if node.name not in columns:
            close = sorted(c for c in columns if node.name.split("_")[0] in c)[:5]
            raise FilterError(f"unknown column {node.name!r}" + (f"; did you mean one of {close}?" if close else ""))
        return
    _literal(node)


def _literal(node: exp.Expression) -> None:
    if isinstance(node, exp.Literal | exp.Boolean):
        return
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return
    raise FilterError(f"{node.sql()!r} is not a value or a column name")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    column = frame[name]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("Float64")
    return column.astype("string")


def _value(node: exp.Expression, frame: pd.DataFrame):
    if isinstance(node, exp.Column):
        return _column(frame, node.name)
    if isinstance(node, exp.Neg):
        return -float(node.this.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if node.is_string:
        return node.this
    return float(node.this)


def evaluate(tree: exp.Expression, frame: pd.DataFrame) -> pd.Series:
    """A boolean mask over ``frame``. Missing values follow SQL: a comparison with a missing
    value is unknown, ``not unknown`` is unknown, and unknown rows do not match."""
    return _evaluate(tree, frame).fillna(False).astype(bool)


def _evaluate(tree: exp.Expression, frame: pd.DataFrame) -> pd.Series:
    if isinstance(tree, exp.Paren):
        return _evaluate(tree.this, frame)
    if isinstance(tree, exp.Not):
        return ~_evaluate(tree.this, frame)
    if isinstance(tree, exp.And):
        return _evaluate(tree.left, frame) & _evaluate(tree.right, frame)
    if isinstance(tree, exp.Or):
        return _evaluate(tree.left, frame) | _evaluate(tree.right, frame)
    if isinstance(tree, tuple(_COMPARISONS)):
        left, right = _value(tree.left, frame), _value(tree.right, frame)
        try:
            result = _COMPARISONS[type(tree)](left, right)
        except TypeError:
            raise FilterError(f"{tree.sql()!r} compares a number with text") from None
        return pd.Series(result, index=frame.index, dtype="boolean")
    if isinstance(tree, exp.In):
        column = _column(frame, tree.this.name)
        mask = column.isin([_value(v, frame) for v in tree.expressions]).astype("boolean")
        mask[column.isna()] = pd.NA
        return mask
    if isinstance(tree, exp.Between):
        column = _column(frame, tree.this.name)
        low, high = _value(tree.args["low"], frame), _value(tree.args["high"], frame)
        return ((column >= low) & (column <= high)).astype("boolean")
    raise FilterError(f"cannot evaluate {tree.sql()!r}")


def columns_used(tree: exp.Expression) -> list[str]:
    return list(dict.fromkeys(column.name for column in tree.find_all(exp.Column)))


__all__ = ["parse_filter", "evaluate", "columns_used", "FilterError"]
