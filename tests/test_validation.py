"""trainflow.validation with real pandera: schemas from specs, failure records, merging, reports."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pandera.pandas as pa_pd
import pyarrow as pa
import pytest

from trainflow.spec import JobSpec, SpecError, parse_spec
from trainflow.validation import build_schema, format_report, merge_reports, validate_frame


def make_spec(schema=None, features=("age", "income"), label="risk") -> JobSpec:
    data = {
        "name": "job",
        "data": {"train": {"parquet": "x.parquet"}},
        "features": list(features),
        "label": label,
        "register": {"model_name": "m"},
    }
    if schema is not None:
        data["schema"] = schema
    return parse_spec(data)


def inline(**columns) -> JobSpec:
    return make_spec({"columns": columns})


def by_check(report: list[dict]) -> dict[tuple, dict]:
    return {(r["column"], r["check"]): r for r in report}


GOOD = pd.DataFrame({"age": [20, 30, 40], "income": [1.0, 2.0, 3.0], "risk": [0.1, 0.5, 0.9]})


# ---------------------------------------------------------------------------------- build_schema
def test_build_schema_from_inline_columns() -> None:
    schema = build_schema(inline(
        age={"dtype": "int64", "ge": 18, "le": 110, "unique": True},
        risk={"dtype": "float64", "gt": 0, "lt": 1, "nullable": True},
    ))
    assert isinstance(schema, pa_pd.DataFrameSchema)
    assert schema.strict is False and schema.coerce is False
    age = schema.columns["age"]
    assert str(age.dtype) == "int64" and age.unique and not age.nullable
    assert [c.name for c in age.checks] == ["greater_than_or_equal_to", "less_than_or_equal_to"]
    assert schema.columns["risk"].nullable
    assert [c.name for c in schema.columns["risk"].checks] == ["greater_than", "less_than"]
    # income is a feature the schema does not declare: it must still exist (nulls allowed)
    assert schema.columns["income"].required and schema.columns["income"].nullable


def test_build_schema_without_schema_section_requires_features_and_label() -> None:
    schema = build_schema(make_spec())
    assert set(schema.columns) == {"age", "income", "risk"}
    assert not schema.columns["risk"].nullable  # a missing label can't be trained on
    assert validate_frame(GOOD, schema) == []
    report = validate_frame(GOOD.drop(columns=["income"]), schema)
    assert report == [{"column": "income", "check": "column_in_dataframe", "failure_count": 1, "examples": []}]
    nulls = validate_frame(GOOD.assign(risk=[0.1, None, 0.3]), schema)
    assert by_check(nulls)[("risk", "not_nullable")]["failure_count"] == 1


def test_valid_frame_gives_empty_report() -> None:
    schema = build_schema(inline(age={"dtype": "int64", "ge": 18}, income={"ge": 0}))
    assert validate_frame(GOOD, schema) == []


# ---------------------------------------------------------------------------------- validate_frame
def test_ge_le_failures_with_counts_and_row_numbers() -> None:
    schema = build_schema(inline(age={"dtype": "int64", "ge": 18, "le": 110}))
    df = pd.DataFrame({"age": [20, 12, 5, 30, 200, 17], "income": 1.0, "risk": 0.5})
    report = by_check(validate_frame(df, schema, row_offset=1000))
    ge = report[("age", "greater_than_or_equal_to(18)")]
    assert ge["failure_count"] == 3
    assert ge["examples"] == [{"row": 1001, "age": 12}, {"row": 1002, "age": 5}, {"row": 1005, "age": 17}]
    le = report[("age", "less_than_or_equal_to(110)")]
    assert le["failure_count"] == 1 and le["examples"] == [{"row": 1004, "age": 200}]


def test_row_numbers_are_positions_not_index_labels() -> None:
    schema = build_schema(inline(age={"ge": 18}))
    df = pd.DataFrame({"age": [20, 12, 30], "income": 1.0, "risk": 0.5}, index=[70, 50, 60])
    [record] = validate_frame(df, schema, row_offset=10)
    assert record["examples"] == [{"row": 11, "age": 12}]
    dup_index = pd.DataFrame({"age": [12, 12, 30], "income": 1.0, "risk": 0.5}, index=[5, 5, 5])
    [record] = validate_frame(dup_index, schema, row_offset=0)
    assert [e["row"] for e in record["examples"]] == [0, 1]


def test_isin_failures() -> None:
    schema = build_schema(inline(segment={"isin": ["a", "b"]}))
    df = GOOD.assign(segment=["a", "c", "d"])
    [record] = validate_frame(df, schema)
    assert record["column"] == "segment" and record["check"] == "isin(['a', 'b'])"
    assert record["failure_count"] == 2
    assert record["examples"] == [{"row": 1, "segment": "c"}, {"row": 2, "segment": "d"}]


def test_nullable_failures() -> None:
    schema = build_schema(inline(income={"dtype": "float64"}, age={"nullable": True}))
    df = pd.DataFrame({"age": [1.0, None, None], "income": [None, 2.0, None], "risk": 0.5})
    report = validate_frame(df, schema, row_offset=5)
    assert len(report) == 1  # age allows nulls
    [record] = report
    assert (record["column"], record["check"], record["failure_count"]) == ("income", "not_nullable", 2)
    assert record["examples"] == [{"row": 5, "income": None}, {"row": 7, "income": None}]


def test_unique_failures() -> None:
    schema = build_schema(inline(age={"unique": True}))
    df = pd.DataFrame({"age": [1, 2, 1, 3, 1], "income": 1.0, "risk": 0.5})
    [record] = validate_frame(df, schema)
    assert (record["check"], record["failure_count"]) == ("field_uniqueness", 3)
    assert [e["row"] for e in record["examples"]] == [0, 2, 4]


def test_regex_failures_skip_nulls_when_nullable() -> None:
    schema = build_schema(inline(code={"dtype": "str", "regex": r"^[A-Z]{2}\d$", "nullable": True}))
    df = GOOD.assign(code=["AB1", "ab1", None])
    [record] = validate_frame(df, schema)
    assert record["check"] == r"str_matches('^[A-Z]{2}\d$')"
    assert record["failure_count"] == 1 and record["examples"] == [{"row": 1, "code": "ab1"}]


def test_dtype_failures() -> None:
    schema = build_schema(inline(age={"dtype": "int64"}, income={"dtype": "float32"}))
    df = pd.DataFrame({"age": [1.5, 2.5], "income": [1.0, 2.0], "risk": 0.5})
    report = by_check(validate_frame(df, schema))
    assert report[("age", "dtype('int64')")]["failure_count"] == 1
    assert report[("age", "dtype('int64')")]["examples"] == [{"row": None, "age": "float64"}]
    assert report[("income", "dtype('float32')")]["examples"] == [{"row": None, "income": "float64"}]
    text = format_report(list(report.values()), "file 'x.parquet'")
    assert "column 'age' should have dtype int64, found float64" in text


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["a", "b"]),  # pandas 3 default (Arrow-backed str)
        pd.Series(["a", "b"], dtype=object),
        pd.Series(["a", "b"], dtype=pd.StringDtype("python")),
        pd.Series(["a", "b"], dtype=pd.StringDtype("pyarrow")),
        pd.Series(["a", None], dtype=pd.ArrowDtype(pa.string())),
        pd.Series(["a", "b"], dtype=pd.ArrowDtype(pa.large_string())),
    ],
    ids=["default", "object", "python", "pyarrow", "arrow", "arrow-large"],
)
@pytest.mark.parametrize("dtype", ["str", "string"])
def test_text_dtypes_accept_every_string_dtype(column: pd.Series, dtype: str) -> None:
    schema = build_schema(inline(name={"dtype": dtype, "nullable": True}))
    assert validate_frame(GOOD.iloc[:2].assign(name=column.values), schema) == []


@pytest.mark.parametrize("dtype", ["str", "string"])
def test_text_dtype_rejects_non_strings(dtype: str) -> None:
    schema = build_schema(inline(name={"dtype": dtype}))
    mixed = GOOD.assign(name=pd.Series(["a", 3, "c"], dtype=object))
    [record] = validate_frame(mixed, schema)
    assert (record["check"], record["failure_count"]) == (f"dtype('{dtype}')", 1)
    assert record["examples"] == [{"row": 1, "name": 3}]
    [record] = validate_frame(GOOD.assign(name=[1, 2, 3]), schema)
    assert record["failure_count"] == 3


def test_examples_capped_at_five() -> None:
    schema = build_schema(inline(age={"ge": 100}))
    df = pd.DataFrame({"age": range(12), "income": 1.0, "risk": 0.5})
    [record] = validate_frame(df, schema)
    assert record["failure_count"] == 12
    assert [e["row"] for e in record["examples"]] == [0, 1, 2, 3, 4]


def test_datetime_bounds_and_values_are_json_friendly() -> None:
    schema = build_schema(inline(when={"dtype": "datetime64[ns]", "ge": "2020-01-01T00:00:00"}))
    df = GOOD.assign(when=pd.to_datetime(["2021-05-01", "2019-12-31", "2020-01-01"]))
    [record] = validate_frame(df, schema)
    assert record["failure_count"] == 1
    assert record["examples"] == [{"row": 1, "when": "2019-12-31T00:00:00"}]


# ---------------------------------------------------------------------------------- merge/format
def test_merge_reports_sums_counts_and_keeps_five_examples() -> None:
    schema = build_schema(inline(age={"ge": 18}, segment={"isin": ["a"]}))
    batch1 = pd.DataFrame({"age": [1, 2, 3, 40], "income": 1.0, "risk": 0.5, "segment": ["a", "b", "a", "a"]})
    batch2 = pd.DataFrame({"age": [50, 4, 5, 6], "income": 1.0, "risk": 0.5, "segment": "a"})
    reports = [validate_frame(batch1, schema, 0), validate_frame(batch2, schema, len(batch1)), []]
    merged = by_check(merge_reports(reports))
    age = merged[("age", "greater_than_or_equal_to(18)")]
    assert age["failure_count"] == 6
    assert [e["row"] for e in age["examples"]] == [0, 1, 2, 5, 6]
    assert merged[("segment", "isin(['a'])")]["failure_count"] == 1
    assert merge_reports([[], []]) == []


def test_merge_reports_does_not_mutate_inputs() -> None:
    record = {"column": "a", "check": "c", "failure_count": 2, "examples": [{"row": 0, "a": 1}]}
    merged = merge_reports([[record], [dict(record, examples=[{"row": 9, "a": 2}])]])
    assert merged[0]["failure_count"] == 4 and len(merged[0]["examples"]) == 2
    assert record["failure_count"] == 2 and record["examples"] == [{"row": 0, "a": 1}]


def test_format_report_is_one_readable_paragraph() -> None:
    schema = build_schema(inline(age={"dtype": "int64", "ge": 18}))
    df = pd.DataFrame({"age": [20, 12, 5, 16, 30], "income": 1.0, "risk": 0.5})
    report = validate_frame(df, schema, row_offset=3)
    report += validate_frame(df.drop(columns=["income"]), build_schema(make_spec()))
    text = format_report(report, "table 'TRAINING_DATA' in '/x/warehouse.duckdb'")
    assert "\n" not in text
    assert text.startswith("Schema validation failed for table 'TRAINING_DATA' in '/x/warehouse.duckdb': ")
    assert "column 'age' check 'greater_than_or_equal_to(18)' failed for 3 rows (e.g. row 4: age=12, row 5: age=5, row 6: age=16)" in text
    assert "column 'income' is missing" in text
    assert text.endswith("Fix the data or the `schema:` section of the spec.")
    assert format_report([], "file 'x'") == "Schema validation passed for file 'x'."


# ----------------------------------------------------------------------------- DataFrameModel refs
@pytest.fixture
def schema_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_schemas_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import pandera.pandas as pa

        class Training(pa.DataFrameModel):
            age: int = pa.Field(ge=18)
            income: float = pa.Field(ge=0)
            risk: float

            @pa.dataframe_check
            def income_above_age(cls, df):
                return df["income"] > df["age"]

        NOT_A_MODEL = 42

        class Plain:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_dataframe_model_reference(schema_module: str) -> None:
    spec = make_spec(f"{schema_module}:Training", features=("age", "income"))
    schema = build_schema(spec)
    assert set(schema.columns) == {"age", "income", "risk"}
    df = pd.DataFrame({"age": [20, 10, 30], "income": [100.0, 50.0, 5.0], "risk": [0.1, 0.2, 0.3]})
    report = by_check(validate_frame(df, schema, row_offset=100))
    assert report[("age", "greater_than_or_equal_to(18)")]["examples"] == [{"row": 101, "age": 10}]
    wide = report[(None, "income_above_age")]
    assert wide["failure_count"] == 1  # one failing row, although pandera lists it per column
    assert wide["examples"][0]["row"] == 102 and wide["examples"][0]["income"] == 5.0


def test_dataframe_model_reference_adds_undeclared_features(schema_module: str) -> None:
    schema = build_schema(make_spec(f"{schema_module}:Training", features=("age", "income", "extra")))
    report = validate_frame(GOOD.assign(income=[100.0, 200.0, 300.0]), schema)
    assert report == [{"column": "extra", "check": "column_in_dataframe", "failure_count": 1, "examples": []}]


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("Missing", "has no attribute 'Missing'"),
        ("NOT_A_MODEL", "is a int, not a pandera DataFrameModel"),
        ("Plain", "is a type, not a pandera DataFrameModel"),
    ],
)
def test_bad_dataframe_model_reference(schema_module: str, attr: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_schema(make_spec(f"{schema_module}:{attr}"))


def test_missing_schema_module() -> None:
    with pytest.raises(SpecError, match="cannot import module 'no_such_pkg.schemas'"):
        build_schema(make_spec("no_such_pkg.schemas:Training"))
