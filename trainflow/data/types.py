"""Column types every source reports the same way, applied where a source yields schema and batches.

Warehouses hand out fixed-point numbers (Snowflake's NUMBER, DuckDB's DECIMAL and the HUGEINT of
`SUM(int)`) that pandas turns into `Decimal` objects. As Snowflake's own connector does, trainflow
reads them as plain numbers:

- DECIMAL(p <= 18, 0) -> int64 (always fits);
- DECIMAL(p > 18, 0)  -> int64, a DataError naming the column when a value does not fit;
- DECIMAL(p, s > 0)   -> float64.
Nulls stay nulls.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from trainflow.errors import DataError

_INT64_DIGITS = 18  # every DECIMAL(18, 0) value fits in int64; DECIMAL(19, 0) may not


def _target(type_: pa.DataType) -> pa.DataType | None:
    if pat.is_decimal(type_):
        return pa.int64() if type_.scale == 0 else pa.float64()
    return None


def normalise_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a source reports: DECIMAL fields replaced by int64/float64."""
    if not any(_target(f.type) for f in schema):
        return schema
    return pa.schema([f.with_type(_target(f.type)) if _target(f.type) else f for f in schema],
                     metadata=schema.metadata)


def normalise_batch(batch: pa.RecordBatch, where: str = "the data") -> pa.RecordBatch:
    """`batch` with DECIMAL columns cast per the rules above (a no-op without DECIMAL columns)."""
    if not any(_target(f.type) for f in batch.schema):
        return batch
    columns = [_cast(batch.column(i), field, where) for i, field in enumerate(batch.schema)]
    return pa.RecordBatch.from_arrays(columns, schema=normalise_schema(batch.schema))


def _cast(column: pa.Array, field: pa.Field, where: str) -> pa.Array:
    target = _target(field.type)
    if target is None:
        return column
    if pat.is_floating(target):
        return pc.cast(column, target, safe=False)  # a DECIMAL with a scale is a measurement, not an id
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"Column {field.name!r} in {where} is {field.type} and holds a value beyond int64's range "
            f"(±9.2e18). CAST it to DOUBLE in the query (e.g. CAST({field.name} AS DOUBLE)) or reduce it."
        ) from None
