"""Session frames: lazy tables and queries with Snowpark's DataFrame operations, compiled to SQL.

`session.table("T").filter(col("age") >= 18).with_column("ratio", col("a") / col("b"))` builds a sqlglot
expression; nothing runs until rows are asked for (`to_pandas`, `count`, or a DataConnector reading
it), and then one SQL statement runs on DuckDB or SQLite. A frame is a plain `SqlSource` underneath,
so `DataConnector.from_dataframe` splits it exactly (a base table in place, anything else read once
into a snapshot first). Operations trainflow does not support raise `UnsupportedOperation`, which
names the SQL alternative (`session.sql(...)`).
"""
from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlglot import exp

from trainflow.data.functions import Column, _as_column, _bare, _expr, col, columns_of
from trainflow.data.sql import SqlSource
from trainflow.errors import ConfigError, InvalidArgument

_BUCKETS = 1_000_000  # sample/random_split draw a row's position in [0, 1) at this resolution


class UnsupportedOperation(ConfigError, NotImplementedError):
    """A Snowpark DataFrame operation trainflow's session frames do not offer."""


@dataclass(frozen=True)
class SqlFrame:
    """A lazy table or query (a Snowpark DataFrame's counterpart): nothing runs until rows are asked for.

    `database` is normalised ("duckdb:<path>" / "sqlite:<path>"); `expr` a sqlglot Table or query whose
    raw-SQL leaves (`session.sql(...)`) are named placeholders filled in `raw` at compile time.
    """

    database: str
    expr: exp.Expression
    raw: tuple[tuple[str, str], ...] = ()
    alias_name: str = field(default_factory=lambda: "f" + uuid.uuid4().hex[:8])

    # ------------------------------------------------------------------ constructors
    @classmethod
    def table(cls, database: str, name: str) -> SqlFrame:
        return cls(database, exp.Table(this=exp.to_identifier(name, quoted=True)))

    @classmethod
    def query(cls, database: str, sql: str) -> SqlFrame:
        key = "__trainflow_sql_" + uuid.uuid4().hex[:12]
        return cls(database, exp.select("*").from_(exp.Table(this=exp.to_identifier(key, quoted=True))),
                   ((key, sql.strip().rstrip(";")),))

    # ------------------------------------------------------------------ compiling
    @property
    def dialect(self) -> str:
        return self.database.partition(":")[0]

    def sql_text(self) -> str:
        """The SQL this frame runs, for this database's dialect."""
        text = self.expr.sql(dialect=self.dialect)
        for key, sql in self.raw:
            text = text.replace(f'"{key}"', f"({sql})")
        return text

    @property
    def source(self) -> SqlSource:
        """What connectors read: a base table in place (it splits without a snapshot), else the query."""
        if isinstance(self.expr, exp.Table) and not self.raw:
            return SqlSource(self.database, table=self.expr.name)
        return SqlSource(self.database, query=self.sql_text())

    def _derive(self, expr: exp.Expression, *others: SqlFrame) -> SqlFrame:
        raw = dict(self.raw)
        for other in others:
            raw.update(other.raw)
        return SqlFrame(self.database, expr, tuple(raw.items()))

    def _select(self) -> exp.Select:
        """A SELECT over this frame to add clauses to (a subquery when this frame is already a query)."""
        if isinstance(self.expr, exp.Table):
            return exp.select("*").from_(self.expr.copy())
        return exp.select("*").from_(exp.Subquery(this=self.expr.copy(), alias=exp.TableAlias(
            this=exp.to_identifier(self.alias_name))))

    # ------------------------------------------------------------------ reading
    @property
    def columns(self) -> list[str]:
        return list(self.source.schema().names)

    @property
    def schema(self) -> pa.Schema:
        return self.source.schema()

    def count(self) -> int:
        return self.source.count_rows()

    def to_arrow(self) -> pa.Table:
        source = self.source
        return pa.Table.from_batches(list(source.iter_batches()), schema=source.schema())

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def collect(self) -> list[dict[str, Any]]:
        """Every row as a dict (small results only: the rows come to this process)."""
        return self.to_arrow().to_pylist()

    def __getitem__(self, name: str) -> Column:
        """This frame's column, qualified for a join's condition: `left["id"] == right["id"]`."""
        return Column(exp.column(name, table=self.alias_name, quoted=True))

    col = __getitem__

    # ------------------------------------------------------------------ projections
    def select(self, *cols: Any) -> SqlFrame:
        chosen = columns_of(cols)
        if not chosen:
            raise InvalidArgument("select() needs at least one column")
        return self._derive(self._select().select(*[c.expr for c in chosen], append=False))

    def filter(self, condition: Column | str) -> SqlFrame:
        cond = _condition(condition, self.dialect)
        return self._derive(self._select().where(cond))

    where = filter

    def with_column(self, name: str, value: Column | Any) -> SqlFrame:
        return self.with_columns([name], [value])

    withColumn = with_column

    def with_columns(self, names: Sequence[str], values: Sequence[Column | Any]) -> SqlFrame:
        if len(names) != len(values):
            raise InvalidArgument(f"with_columns got {len(names)} names and {len(values)} values")
        new = {n.lower(): (n, v) for n, v in zip(names, values, strict=True)}
        out = []
        for existing in self.columns:
            if existing.lower() in new:  # replaced in place, as Snowpark does
                name, value = new.pop(existing.lower())
                out.append(_value(value).alias(name).expr)
            else:
                out.append(exp.column(existing, quoted=True))
        out += [_value(v).alias(n).expr for n, v in new.values()]
        return self._derive(self._select().select(*out, append=False))

    def drop(self, *names: str | Column) -> SqlFrame:
        gone = {(_as_column(n).output_name() or "").lower() for n in columns_of(names)}
        kept = [c for c in self.columns if c.lower() not in gone]
        if not kept:
            raise InvalidArgument("drop() would leave no column")
        return self.select(*kept)

    def with_column_renamed(self, existing: str | Column, new: str) -> SqlFrame:
        old = (_as_column(existing).output_name() or "").lower()
        cols = self.columns
        if old not in [c.lower() for c in cols]:
            raise InvalidArgument(f"with_column_renamed: no column {existing!r} (columns: {cols})")
        return self.select(*[col(c).alias(new) if c.lower() == old else col(c) for c in cols])

    withColumnRenamed = with_column_renamed
    rename = with_column_renamed

    def distinct(self) -> SqlFrame:
        return self._derive(self._select().distinct())

    def drop_duplicates(self, *subset: str) -> SqlFrame:
        if not subset:
            return self.distinct()
        raise UnsupportedOperation("drop_duplicates(subset) is not supported; use session.sql with "
                                   "ROW_NUMBER() OVER (PARTITION BY ...) = 1, or distinct() on all columns.")

    def sort(self, *cols: Any, ascending: bool | Sequence[bool] = True) -> SqlFrame:
        keys = columns_of(cols)
        flags = [ascending] * len(keys) if isinstance(ascending, bool) else list(ascending)
        order = [c.expr if isinstance(c.expr, exp.Ordered) else
                 exp.Ordered(this=_bare(c.expr), desc=not up, nulls_first=up) for c, up in zip(keys, flags, strict=True)]
        return self._derive(self._select().order_by(*order))

    order_by = sort
    orderBy = sort

    def limit(self, n: int, offset: int = 0) -> SqlFrame:
        q = self._select().limit(int(n))
        return self._derive(q.offset(int(offset)) if offset else q)

    # ------------------------------------------------------------------ combining
    def union_all(self, other: SqlFrame) -> SqlFrame:
        """Rows of both, by column position (Snowpark's union_all)."""
        self._same_database(other, "union_all")
        return self._derive(exp.union(self._select(), other._select(), distinct=False), other)

    unionAll = union_all

    def union(self, other: SqlFrame) -> SqlFrame:
        """Distinct rows of both, by column position."""
        self._same_database(other, "union")
        return self._derive(exp.union(self._select(), other._select(), distinct=True), other)

    def join(self, right: SqlFrame, on: str | Sequence[str] | Column | None = None, how: str = "inner",
             *, join_type: str | None = None) -> SqlFrame:
        """Join on column names (kept once, as SQL's USING) or on a condition built from the frames'
        columns (`left["id"] == right["cust_id"]`). `how`: inner, left, right, outer/full, cross."""
        self._same_database(right, "join")
        kind = (join_type or how).lower().replace("_", "").replace("outer", "") or "full"
        if kind not in _JOINS:
            raise UnsupportedOperation(f"join how={how!r} is not supported (inner, left, right, outer, cross); "
                                       "for semi/anti joins filter with EXISTS in session.sql(...).")
        left_q, right_q = (exp.Subquery(this=f._select(), alias=exp.TableAlias(this=exp.to_identifier(f.alias_name)))
                           for f in (self, right))
        args: dict[str, Any] = {"this": right_q, **_JOINS[kind]}
        if isinstance(on, Column) and kind != "cross":
            args["on"] = _bare(on.expr)
        elif on is not None and kind != "cross":
            names = [on] if isinstance(on, str) else list(on)
            args["using"] = [exp.to_identifier(n, quoted=True) for n in names]
        elif kind != "cross":
            raise InvalidArgument("join() needs `on` (column names or a condition) unless how='cross'")
        if "using" not in args:
            clash = {c.lower() for c in self.columns} & {c.lower() for c in right.columns}
            if clash:
                raise InvalidArgument(f"join: both frames have column(s) {sorted(clash)}; rename them on one side "
                                      "(with_column_renamed) or join on those names (on=[...]).")
        query = exp.select("*").from_(left_q).join(exp.Join(**args))
        return self._derive(query, right)

    def _same_database(self, other: SqlFrame, op: str) -> None:
        if not isinstance(other, SqlFrame) or other.database != self.database:
            raise InvalidArgument(f"{op}() needs a frame of the same session (database {self.database})")

    # ------------------------------------------------------------------ aggregation
    def group_by(self, *cols: Any) -> GroupedFrame:
        return GroupedFrame(self, columns_of(cols))

    groupBy = group_by

    def agg(self, *aggs: Any) -> SqlFrame:
        return GroupedFrame(self, []).agg(*aggs)

    # ------------------------------------------------------------------ sampling
    def sample(self, frac: float | None = None, n: int | None = None, seed: int | None = None) -> SqlFrame:
        """About `frac` of the rows, or `n` rows; the same rows for the same `seed` and data."""
        if (frac is None) == (n is None):
            raise InvalidArgument("sample() takes exactly one of frac= or n=")
        position = self._position(seed)
        if n is not None:
            if n < 0:
                raise InvalidArgument(f"sample(n={n}): n must be >= 0")
            return self._derive(self._select().order_by(position).limit(int(n)))
        if not 0 <= frac <= 1:
            raise InvalidArgument(f"sample(frac={frac}): frac must be between 0 and 1")
        return self._derive(self._select().where(exp.LT(this=position, expression=exp.Literal.number(
            int(frac * _BUCKETS)))))

    def random_split(self, weights: Sequence[float], seed: int | None = None) -> list[SqlFrame]:
        """Frames with about `weights` (normalised) of the rows each; disjoint, together every row,
        the same for the same `seed` and data (identical rows land in the same frame)."""
        if not weights or any(w <= 0 for w in weights):
            raise InvalidArgument(f"random_split weights must be positive, got {list(weights)}")
        position = self._position(seed)
        total, acc, cuts = float(sum(weights)), 0.0, [0]
        for w in weights:
            acc += w
            cuts.append(_BUCKETS if acc >= total else round(acc / total * _BUCKETS))
        frames = []
        for lo, hi in itertools.pairwise(cuts):
            cond = exp.and_(exp.GTE(this=position.copy(), expression=exp.Literal.number(lo)),
                            exp.LT(this=position.copy(), expression=exp.Literal.number(hi)))
            frames.append(self._derive(self._select().where(cond)))
        return frames

    randomSplit = random_split

    def _position(self, seed: int | None) -> exp.Expression:
        """A row's bucket in [0, _BUCKETS) from a hash of its values and the seed (no row order needed)."""
        seed = int.from_bytes(os.urandom(4), "little") if seed is None else int(seed)
        values = [exp.column(c, quoted=True) for c in self.columns]
        if self.dialect == "duckdb":
            hashed = exp.func("hash", exp.Literal.number(seed), *values)
        else:
            hashed = exp.Anonymous(this="trainflow_hash", expressions=[exp.Literal.number(seed), *values])
        return exp.Mod(this=hashed, expression=exp.Literal.number(_BUCKETS))

    # ------------------------------------------------------------------ not offered
    def __getattr__(self, name: str) -> Any:
        if name in _UNSUPPORTED:
            raise UnsupportedOperation(f"{name}() is not supported on trainflow session frames: {_UNSUPPORTED[name]}")
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


# how= -> sqlglot Join arguments (an outer join is its side alone: LEFT JOIN, FULL JOIN)
_JOINS = {"inner": {"kind": "INNER"}, "left": {"side": "LEFT"}, "right": {"side": "RIGHT"},
          "full": {"side": "FULL"}, "cross": {"kind": "CROSS"}}

_UNSUPPORTED = {
    "pivot": "write the pivot in SQL and run it with session.sql(...) (DuckDB has PIVOT).",
    "unpivot": "write it in SQL and run it with session.sql(...) (DuckDB has UNPIVOT).",
    "flatten": "expand arrays in SQL (DuckDB: unnest) with session.sql(...).",
    "join_table_function": "call the table function in SQL with session.sql(...).",
    "cache_result": "frames are lazy; DataConnector snapshots a query once when it is read.",
    "write": "write results with DuckDB/SQLite directly, or use a scoring spec's sink.",
    "cross_join": "use join(other, how='cross').",
}


@dataclass(frozen=True)
class GroupedFrame:
    """`frame.group_by(...)`: finish with `.agg(...)` or `.count()`."""

    frame: SqlFrame
    keys: list[Column]

    def agg(self, *aggs: Any) -> SqlFrame:
        """Aggregates as Columns (`sum_("x").alias("s")`), (column, function) pairs or {column: function}."""
        exprs = []
        for a in aggs:
            if isinstance(a, dict):
                exprs += [_named_agg(c, f) for c, f in a.items()]
            elif isinstance(a, tuple):
                exprs.append(_named_agg(*a))
            elif isinstance(a, (list,)):
                exprs += [x.expr for x in columns_of(a)]
            else:
                exprs.append(_value(a).expr)
        if not exprs:
            raise InvalidArgument("agg() needs at least one aggregate")
        q = self.frame._select().select(*[k.expr for k in self.keys], *exprs, append=False)
        if self.keys:
            q = q.group_by(*[_bare(k.expr) for k in self.keys])
        return self.frame._derive(q)

    def count(self) -> SqlFrame:
        from trainflow.data import functions as F

        return self.agg(F.count("*").alias("count"))


def _named_agg(column: str, function: str) -> exp.Expression:
    from trainflow.data import functions as F

    funcs = {"sum": F.sum, "avg": F.avg, "mean": F.avg, "min": F.min, "max": F.max, "count": F.count,
             "count_distinct": F.count_distinct, "stddev": F.stddev}
    if function.lower() not in funcs:
        raise InvalidArgument(f"agg function {function!r} is not supported; use one of {sorted(funcs)}")
    return funcs[function.lower()](column).alias(f"{function.upper()}({column})").expr


def _value(value: Any) -> Column:
    return value if isinstance(value, Column) else Column(_expr(value))


def _condition(condition: Column | str, dialect: str) -> exp.Expression:
    if isinstance(condition, Column):
        return _bare(condition.expr)
    if isinstance(condition, str):
        import sqlglot

        return sqlglot.parse_one(condition, read=dialect)
    raise InvalidArgument(f"filter() takes a Column or a SQL condition string, got {type(condition).__name__}")
