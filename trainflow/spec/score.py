"""The scoring spec: one validated ScoreSpec = one batch-scoring job (model, source, sink, carry)."""
from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from trainflow.defaults import DEFAULT_DATABASE
from trainflow.spec.base import _NAME, MODEL_URI, _join, _Model, _problems
from trainflow.spec.models import ScheduleSpec, SourceSpec

RUN_ID_COLUMN = "run_id"  # every output row names the scoring run that wrote it


class SinkSpec(_Model):
    """Where scores go: exactly one of a Parquet folder/URI or a DuckDB/SQLite table."""

    parquet: str | None = Field(None, min_length=1, description="Folder or URI (s3://, gs://) for Parquet parts.")
    table: str | None = Field(None, min_length=1, description="Table in `database` (created when missing).")
    database: str | None = Field(
        None, description=f"DuckDB file path, duckdb:///path or sqlite:///path for `table` (default {DEFAULT_DATABASE})."
    )

    @model_validator(mode="after")
    def _one_sink(self) -> SinkSpec:
        if (self.parquet is None) == (self.table is None):
            got = "both" if self.parquet is not None else "neither"
            raise _problems(("", f"give exactly one of parquet or table (got {got})"))
        if self.parquet is not None and self.database is not None:
            raise _problems(("database", "applies only to a table sink, not parquet"))
        return self

    @property
    def resolved_database(self) -> str | None:
        """The database of a table sink (`database`, or the default); None for parquet."""
        return None if self.parquet is not None else self.database or DEFAULT_DATABASE

    @property
    def kind(self) -> Literal["parquet", "table"]:
        return "parquet" if self.parquet is not None else "table"


class ScoreSpec(_Model):
    """One batch-scoring job: a registered model, the rows to score, where the scores go."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=_NAME, description="Job name (letters, digits, - _ .); also the MLflow experiment "
                                                 "of its scoring runs.")
    model: str = Field(pattern=MODEL_URI, description="Registered version: models:/NAME@ALIAS (e.g. @champion, "
                                                      "resolved when the run starts) or models:/NAME/VERSION.")
    source: SourceSpec = Field(description="Rows to score (table, sql or parquet, as in a job spec's data).")
    sink: SinkSpec = Field(description="Where the scores go.")
    carry: list[str] = Field(default_factory=list, description="Source columns copied to every output row, "
                                                               "e.g. an id.")
    prediction_column: str = Field("prediction", min_length=1, description="Name of the output column.")
    schedule: ScheduleSpec | None = Field(None, description="Schedule, read by deployments only.")

    @model_validator(mode="after")
    def _columns(self) -> ScoreSpec:
        found: list[tuple[str, str]] = []
        dups = sorted({c for c in self.carry if self.carry.count(c) > 1})
        if dups:
            found.append(("carry", f"duplicate columns: {_join(dups)}"))
        taken = [c for c in (self.prediction_column, RUN_ID_COLUMN) if c in self.carry]
        if taken:
            found.append(("carry", f"{_join(taken)} would be overwritten by the output's own column(s); "
                                   "rename it in the source (sql: SELECT ... AS other) or set prediction_column"))
        if self.prediction_column == RUN_ID_COLUMN:
            found.append(("prediction_column", f"{RUN_ID_COLUMN!r} is the output's run column; choose another name"))
        if found:
            raise _problems(*found)
        return self
