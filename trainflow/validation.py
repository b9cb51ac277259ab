"""Pandera checks built from the job spec, and failure reports a user can act on.

The load task validates data batch by batch on Ray workers, so this module only turns a spec into a
pandera schema, validates one pandas batch into small JSON-friendly failure records (row numbers are
global through `row_offset`), merges the per-batch records, and formats them as one paragraph.
No Ray and no Prefect here: the records travel back to the driver and into a Prefect artifact.
"""
from __future__ import annotations

import importlib
import math
import re
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa_pd
import pyarrow.types as pa_types

from trainflow.spec import InlineSchema, JobSpec, SpecError

__all__ = ["MAX_EXAMPLES", "build_schema", "format_report", "merge_reports", "validate_frame"]

MAX_EXAMPLES = 5

# spec dtype -> pandera dtype. Text ("str"/"string") is checked by `_text_check` instead, because
# pandera's str/string dtypes each reject some of the string dtypes pandas 3 and Arrow produce.
_DTYPES: dict[str, Any] = {
    "int64": "int64",
    "int32": "int32",
    "float64": "float64",
    "float32": "float32",
    "bool": "bool",
    "category": "category",
    "datetime64[ns]": "datetime64[ns]",
}
_TEXT = ("str", "string")


def _is_text(series: pd.Series) -> pd.Series:
    """Row-wise: is this a string? Any string dtype (object, python/pyarrow StringDtype, Arrow) passes."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype)
        and (pa_types.is_string(dtype.pyarrow_dtype) or pa_types.is_large_string(dtype.pyarrow_dtype)
             or pa_types.is_string_view(dtype.pyarrow_dtype))
    ):
        return pd.Series(True, index=series.index)
    if dtype == object:
        return series.map(lambda v: isinstance(v, str)).astype(bool)
    return pd.Series(False, index=series.index)


def _text_check(name: str) -> pa_pd.Check:
    return pa_pd.Check(_is_text, name=f"dtype('{name}')")


def _inline_columns(schema: InlineSchema) -> dict[str, pa_pd.Column]:
    columns: dict[str, pa_pd.Column] = {}
    for name, check in schema.columns.items():
        checks = [_text_check(check.dtype)] if check.dtype in _TEXT else []
        for key in ("ge", "le", "gt", "lt"):
            value = getattr(check, key)
            if value is not None:
                checks.append(getattr(pa_pd.Check, key)(_as_number(value)))
        if check.isin is not None:
            checks.append(pa_pd.Check.isin(check.isin))
        if check.regex is not None:
            checks.append(pa_pd.Check.str_matches(check.regex))
        columns[name] = pa_pd.Column(
            _DTYPES.get(check.dtype) if check.dtype else None,
            checks=checks,
            nullable=check.nullable,
            unique=check.unique,
            required=True,
            name=name,
        )
    return columns


def _as_number(value: Any) -> Any:
    """18.0 -> 18, so check names read `greater_than_or_equal_to(18)` as the user wrote them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _import_model(reference: str) -> type[pa_pd.DataFrameModel]:
    """Import "package.module:Class" and make sure it is a pandera DataFrameModel."""
    module_name, _, attr = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing user code
        raise SpecError(
            f"schema: cannot import module {module_name!r} named in {reference!r} "
            f"({type(exc).__name__}: {exc}). Install or fix the module, or write the checks inline "
            "under `schema: {columns: ...}`."
        ) from None
    model = getattr(module, attr, None)
    if model is None:
        raise SpecError(
            f"schema: module {module_name!r} has no attribute {attr!r} (named in {reference!r}). "
            "Fix the class name after the colon."
        )
    if not (isinstance(model, type) and issubclass(model, pa_pd.DataFrameModel)):
        raise SpecError(
            f"schema: {reference!r} is a {type(model).__name__}, not a pandera DataFrameModel "
            "subclass (pandera.pandas.DataFrameModel). Point it at a DataFrameModel class."
        )
    return model


def build_schema(spec: JobSpec) -> pa_pd.DataFrameSchema:
    """The spec's pandera schema, plus presence checks for features and label it does not name.

    Undeclared features may hold nulls (the boosters treat NaN as missing); an undeclared label may
    not, because no trainer can learn from a missing target.
    """
    ref_or_inline = spec.schema_
    if isinstance(ref_or_inline, str):
        schema = _import_model(ref_or_inline).to_schema()
    else:
        columns = _inline_columns(ref_or_inline) if ref_or_inline is not None else {}
        schema = pa_pd.DataFrameSchema(columns, strict=False, coerce=False, name=spec.name)
    missing = {
        name: pa_pd.Column(None, nullable=name != spec.label, required=True, name=name)
        for name in [*spec.features, spec.label]
        if name not in schema.columns
    }
    return schema.add_columns(missing) if missing else schema


# ------------------------------------------------------------------------------------ validation
def plain_value(value: Any) -> Any:
    """JSON-friendly scalar: numpy -> python, NaN/NaT -> None, timestamps -> ISO text."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    missing = pd.isna(value) if np.ndim(value) == 0 else False
    if isinstance(missing, (bool, np.bool_)) and missing:
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


class _Positions:
    """Index label -> positional row number, computed only for the few rows shown as examples."""

    def __init__(self, index: pd.Index, offset: int):
        self.index, self.offset = index, offset
        self.trivial = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1

    def __call__(self, label: Any) -> int | None:
        if _is_missing(label):
            return None
        if self.trivial:
            return self.offset + int(label)
        position = self.index.get_indexer([label])[0]
        return None if position < 0 else self.offset + int(position)


def _records_from_cases(cases: pd.DataFrame, positions: _Positions) -> list[dict]:
    """Aggregate pandera's failure_cases table into one record per (column, check)."""
    records: dict[tuple[Any, str], dict] = {}
    row_examples: dict[tuple[Any, str], dict[Hashable, dict]] = {}
    seen_rows: dict[tuple[Any, str], set] = {}
    columns = (cases[c].tolist() for c in ("schema_context", "column", "check", "failure_case", "index"))
    for context, column, check, value, label in zip(*columns):
        check = str(check)
        column = None if _is_missing(column) else str(column)
        frame_level = context == "DataFrameSchema"
        if frame_level and check == "column_in_dataframe":
            column, label = str(value), None
        row_wise = frame_level and not _is_missing(label) and check != "column_in_dataframe"
        key = (None if row_wise else column, check)
        record = records.setdefault(
            key, {"column": key[0], "check": check, "failure_count": 0, "examples": []}
        )
        if row_wise:  # a dataframe-wide check: pandera lists each failing row once per column
            rows = seen_rows.setdefault(key, set())
            if label not in rows:
                rows.add(label)
                record["failure_count"] += 1
            examples = row_examples.setdefault(key, {})
            if label in examples or len(examples) < MAX_EXAMPLES:
                example = examples.setdefault(label, {"row": positions(label)})
                if column is not None:
                    example[column] = plain_value(value)
            continue
        record["failure_count"] += 1
        if check == "column_in_dataframe" or len(record["examples"]) >= MAX_EXAMPLES:
            continue
        record["examples"].append({"row": positions(label), column or "value": plain_value(value)})
    for key, examples in row_examples.items():
        records[key]["examples"] = list(examples.values())
    return list(records.values())


def validate_frame(
    df: pd.DataFrame, schema: pa_pd.DataFrameSchema, row_offset: int = 0
) -> list[dict]:
    """Validate one batch; return failure records (empty when valid) with global row numbers.

    Each record: {"column": str|None, "check": str, "failure_count": int, "examples": [<=5 dicts
    with "row" (row_offset + position in df) and the failing values]}.
    """
    frame = df if df.index.is_unique else df.reset_index(drop=True)
    positions = _Positions(frame.index, row_offset)
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        return _records_from_cases(exc.failure_cases, positions)
    except pandera.errors.SchemaError as exc:  # raised eagerly by some backends despite lazy=True
        cases = exc.failure_cases
        count = len(cases) if isinstance(cases, (pd.DataFrame, pd.Series)) else 1
        column = getattr(exc.schema, "name", None)
        return [{"column": column, "check": str(exc.check), "failure_count": count, "examples": []}]
    return []


def merge_reports(reports: Iterable[list[dict]]) -> list[dict]:
    """Combine per-batch reports: counts summed per (column, check), first examples kept."""
    merged: dict[tuple[Any, str], dict] = {}
    for report in reports:
        for record in report:
            key = (record["column"], record["check"])
            target = merged.setdefault(
                key, {"column": key[0], "check": key[1], "failure_count": 0, "examples": []}
            )
            target["failure_count"] += record["failure_count"]
            room = MAX_EXAMPLES - len(target["examples"])
            target["examples"].extend(dict(e) for e in record["examples"][:room])
    return list(merged.values())


# ------------------------------------------------------------------------------------ formatting
def _value(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else "null" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _example(example: dict) -> str:
    values = {k: v for k, v in example.items() if k != "row"}
    shown = ", ".join(f"{k}={_value(v)}" for k, v in values.items())
    if example.get("row") is None:
        return shown
    if len(values) == 1:
        return f"row {example['row']}: {shown}"
    return f"row {example['row']} ({shown})" if shown else f"row {example['row']}"


def _rows(n: int) -> str:
    return f"{n} row{'s' if n != 1 else ''}"


def _describe(record: dict) -> str:
    column, check, count = record["column"], record["check"], record["failure_count"]
    examples = [e for e in map(_example, record["examples"][:3]) if e]
    eg = f" (e.g. {', '.join(examples)})" if examples else ""
    subject = f"column {column!r}" if column is not None else "the table"
    if check == "column_in_dataframe":
        return f"column {column!r} is missing"
    dtype = re.fullmatch(r"dtype\('(.+)'\)", check)
    if dtype and all(e.get("row") is None for e in record["examples"]):
        got = [v for e in record["examples"] for k, v in e.items() if k != "row"]
        found = f", found {got[0]}" if got else ""
        return f"{subject} should have dtype {dtype.group(1)}{found}"
    if check == "not_nullable":
        return f"{subject} has null values in {_rows(count)}{eg}"
    if check in ("field_uniqueness", "multiple_fields_uniqueness"):
        return f"{subject} has duplicate values in {_rows(count)}{eg}"
    return f"{subject} check {check!r} failed for {_rows(count)}{eg}"


def format_report(report: list[dict], source: str) -> str:
    """One readable paragraph: what failed, how often, example rows, and where to fix it."""
    if not report:
        return f"Schema validation passed for {source}."
    problems = "; ".join(_describe(r) for r in report)
    return (
        f"Schema validation failed for {source}: {problems}. "
        "Fix the data or the `schema:` section of the spec."
    )
