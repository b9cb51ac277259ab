"""Column expressions for session frames: the counterpart of `snowflake.snowpark.functions`.

`col("age") >= 18`, `when(col("income") > 5e4, "high").otherwise("low")`, `sum_("x").alias("total")`:
each is a `Column` wrapping a sqlglot expression, compiled to DuckDB or SQLite SQL when the frame's rows
are read (trainflow.data.frame). Names match Snowpark's (`sum`, `avg`, `count`, `log(base, x)`, ...).
Identifiers are matched case-insensitively by both engines, as Snowflake matches unquoted names; the
output keeps the case you wrote.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlglot import exp

from trainflow.errors import InvalidArgument


class Column:
    """A column or expression of a session frame (Snowpark's `Column`)."""

    def __init__(self, expr: exp.Expression):
        self.expr = expr

    # ------------------------------------------------------------------ naming
    def alias(self, name: str) -> Column:
        return Column(exp.Alias(this=_bare(self.expr), alias=exp.to_identifier(name, quoted=True)))

    as_ = alias
    name = alias

    def output_name(self) -> str | None:
        """The column name this expression produces, when it has one (a column or an alias)."""
        if isinstance(self.expr, exp.Alias):
            return self.expr.alias
        if isinstance(self.expr, exp.Column):
            return self.expr.name
        return None

    # ------------------------------------------------------------------ operators
    def _bin(self, cls: type[exp.Expression], other: Any, reverse: bool = False) -> Column:
        left, right = _bare(self.expr), _expr(other)
        return Column(exp.Paren(this=cls(this=right, expression=left) if reverse else cls(this=left, expression=right)))

    def __eq__(self, other: object) -> Column:  # type: ignore[override]
        return self._bin(exp.EQ, other)

    def __ne__(self, other: object) -> Column:  # type: ignore[override]
        return self._bin(exp.NEQ, other)

    def __lt__(self, other: Any) -> Column:
        return self._bin(exp.LT, other)

    def __le__(self, other: Any) -> Column:
        return self._bin(exp.LTE, other)

    def __gt__(self, other: Any) -> Column:
        return self._bin(exp.GT, other)

    def __ge__(self, other: Any) -> Column:
        return self._bin(exp.GTE, other)

    def __add__(self, other: Any) -> Column:
        return self._bin(exp.Add, other)

    def __radd__(self, other: Any) -> Column:
        return self._bin(exp.Add, other, reverse=True)

    def __sub__(self, other: Any) -> Column:
        return self._bin(exp.Sub, other)

    def __rsub__(self, other: Any) -> Column:
        return self._bin(exp.Sub, other, reverse=True)

    def __mul__(self, other: Any) -> Column:
        return self._bin(exp.Mul, other)

    def __rmul__(self, other: Any) -> Column:
        return self._bin(exp.Mul, other, reverse=True)

    def __truediv__(self, other: Any) -> Column:
        # Snowflake divides numbers as decimals; SQLite and DuckDB would divide integers as integers
        return Column(exp.Paren(this=exp.Div(this=_as_double(self.expr), expression=_as_double(_expr(other)))))

    def __rtruediv__(self, other: Any) -> Column:
        return Column(exp.Paren(this=exp.Div(this=_as_double(_expr(other)), expression=_as_double(self.expr))))

    def __mod__(self, other: Any) -> Column:
        return self._bin(exp.Mod, other)

    def __neg__(self) -> Column:
        return Column(exp.Neg(this=_bare(self.expr)))

    def __and__(self, other: Any) -> Column:
        return self._bin(exp.And, other)

    def __or__(self, other: Any) -> Column:
        return self._bin(exp.Or, other)

    def __invert__(self) -> Column:
        return Column(exp.Not(this=exp.Paren(this=_bare(self.expr))))

    def __bool__(self) -> bool:
        raise InvalidArgument("A Column has no truth value: combine conditions with & | ~ (not `and`/`or`/`not`), "
                              "and wrap each comparison in parentheses: (col('a') > 1) & (col('b') < 2).")

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ predicates and casts
    def is_null(self) -> Column:
        return Column(exp.Is(this=_bare(self.expr), expression=exp.Null()))

    isNull = is_null

    def is_not_null(self) -> Column:
        return Column(exp.Not(this=exp.Is(this=_bare(self.expr), expression=exp.Null())))

    isNotNull = is_not_null

    def isin(self, *values: Any) -> Column:
        items = values[0] if len(values) == 1 and isinstance(values[0], (list, tuple, set)) else values
        return Column(exp.In(this=_bare(self.expr), expressions=[_expr(v) for v in items]))

    in_ = isin

    def between(self, low: Any, high: Any) -> Column:
        return Column(exp.Between(this=_bare(self.expr), low=_expr(low), high=_expr(high)))

    def like(self, pattern: str) -> Column:
        return Column(exp.Like(this=_bare(self.expr), expression=_expr(pattern)))

    def cast(self, to: str) -> Column:
        return Column(exp.Cast(this=_bare(self.expr), to=_type(to)))

    astype = cast

    def asc(self) -> Column:
        return Column(exp.Ordered(this=_bare(self.expr), desc=False, nulls_first=True))

    def desc(self) -> Column:
        return Column(exp.Ordered(this=_bare(self.expr), desc=True, nulls_first=False))

    def __repr__(self) -> str:
        return f"Column[{self.expr.sql()}]"


class CaseExpr(Column):
    """`when(cond, value).when(...).otherwise(value)`."""

    def when(self, condition: Column, value: Any) -> CaseExpr:
        case = self.expr.copy()
        return CaseExpr(case.when(_bare(_expr(condition)), _expr(value)))

    def otherwise(self, value: Any) -> Column:
        return Column(self.expr.copy().else_(_expr(value)))

    else_ = otherwise


# ---------------------------------------------------------------------------------- constructors
def col(name: str) -> Column:
    """A column by name (`"*"` for every column)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"col() takes a column name, got {name!r}")
    return Column(exp.Star() if name == "*" else exp.column(name, quoted=True))


column = col


def lit(value: Any) -> Column:
    return Column(_literal(value))


def when(condition: Column, value: Any) -> CaseExpr:
    return CaseExpr(exp.Case().when(_bare(_expr(condition)), _expr(value)))


def iff(condition: Column, if_true: Any, if_false: Any) -> Column:
    return when(condition, if_true).otherwise(if_false)


def sql_expr(text: str) -> Column:
    """A SQL expression written by hand, e.g. sql_expr("age * 2")."""
    import sqlglot

    return Column(sqlglot.parse_one(text))


# ---------------------------------------------------------------------------------- aggregates
def _agg(cls: type[exp.Expression], c: Any) -> Column:
    return Column(cls(this=_bare(_as_column(c).expr)))


def sum(c: Any) -> Column:
    return _agg(exp.Sum, c)


def avg(c: Any) -> Column:
    return _agg(exp.Avg, c)


mean = avg


def min(c: Any) -> Column:
    return _agg(exp.Min, c)


def max(c: Any) -> Column:
    return _agg(exp.Max, c)


def count(c: Any = "*") -> Column:
    target = exp.Star() if c == "*" else _bare(_as_column(c).expr)
    return Column(exp.Count(this=target))


def count_distinct(c: Any) -> Column:
    return Column(exp.Count(this=exp.Distinct(expressions=[_bare(_as_column(c).expr)])))


countDistinct = count_distinct


def stddev(c: Any) -> Column:
    return _agg(exp.StddevSamp, c)


# ---------------------------------------------------------------------------------- scalar functions
def _unary(cls: type[exp.Expression], name: str, as_double: bool = False):
    """`name(c)`: one column or column name in, `cls(c)` out (as floating point when `as_double`)."""
    def function(c: Any) -> Column:
        e = _as_column(c).expr
        return Column(cls(this=_as_double(e) if as_double else _bare(e)))

    function.__name__ = function.__qualname__ = name
    return function


abs = _unary(exp.Abs, "abs")
floor = _unary(exp.Floor, "floor")
ceil = _unary(exp.Ceil, "ceil")
upper = _unary(exp.Upper, "upper")
lower = _unary(exp.Lower, "lower")
length = _unary(exp.Length, "length")
sqrt = _unary(exp.Sqrt, "sqrt", as_double=True)
exp_ = _unary(exp.Exp, "exp_", as_double=True)  # `exp` is sqlglot's module here
ln = _unary(exp.Ln, "ln", as_double=True)


def log(base: Any, x: Any) -> Column:
    """Logarithm of `x` to `base`, as Snowpark's log(base, x)."""
    return Column(exp.Div(this=exp.Ln(this=_as_double(_as_column(x).expr)),
                          expression=exp.Ln(this=_as_double(_expr(base)))))


def pow(c: Any, p: Any) -> Column:
    return Column(exp.Pow(this=_as_double(_as_column(c).expr), expression=_expr(p)))


def round(c: Any, scale: int = 0) -> Column:
    return Column(exp.Round(this=_bare(_as_column(c).expr), decimals=exp.Literal.number(scale)))


def coalesce(*cols: Any) -> Column:
    first, *rest = [_bare(_as_column(c).expr) for c in cols]
    return Column(exp.Coalesce(this=first, expressions=rest))


def concat(*cols: Any) -> Column:
    return Column(exp.Concat(expressions=[_bare(_as_column(c).expr) for c in cols]))


def cast(c: Any, to: str) -> Column:
    return _as_column(c).cast(to)


# ---------------------------------------------------------------------------------- helpers
_TYPES = {"int": "BIGINT", "integer": "BIGINT", "bigint": "BIGINT", "long": "BIGINT", "float": "DOUBLE",
          "double": "DOUBLE", "decimal": "DOUBLE", "number": "DOUBLE", "string": "TEXT", "varchar": "TEXT",
          "text": "TEXT", "str": "TEXT", "boolean": "BOOLEAN", "bool": "BOOLEAN", "date": "DATE",
          "timestamp": "TIMESTAMP"}


def _type(to: Any) -> exp.DataType:
    name = to if isinstance(to, str) else type(to).__name__.removesuffix("Type")  # DoubleType() -> Double
    key = name.lower().split("(")[0].strip()
    if key not in _TYPES:
        raise InvalidArgument(f"cast to {to!r} is not supported; use one of {', '.join(sorted(_TYPES))}")
    return exp.DataType.build(_TYPES[key])


def _as_double(e: exp.Expression) -> exp.Expression:
    return exp.Cast(this=_bare(e), to=exp.DataType.build("DOUBLE"))


def _literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value) if value >= 0 else exp.Neg(this=exp.Literal.number(-value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    raise InvalidArgument(f"lit() takes None, a bool, a number or a string, got {type(value).__name__}")


def _expr(value: Any) -> exp.Expression:
    return _bare(value.expr) if isinstance(value, Column) else _literal(value)


def _as_column(value: Any) -> Column:
    return value if isinstance(value, Column) else col(value)


def _bare(e: exp.Expression) -> exp.Expression:
    """An aliased expression used inside another one loses its alias."""
    return e.this if isinstance(e, exp.Alias) else e


def columns_of(values: Iterable[Any]) -> list[Column]:
    """Strings and Columns (and lists of them) as Columns."""
    out: list[Column] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(columns_of(v))
        else:
            out.append(_as_column(v))
    return out

