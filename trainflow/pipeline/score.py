"""Batch scoring: a registered version scores a source into a sink, as plain steps.

`resolve` loads the version (an alias is resolved once, at the start), `check` reads the input once
on Ray to check it against the model's training schema (the stored spec's pandera checks on the
features, the trained categories and types) and to digest it, `score` has one Ray task per shard
write its own Parquet part, `publish` loads a table sink's parts in one transaction, and `record`
logs the run's lineage (model version, input snapshot, output) to MLflow.
"""
from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from trainflow import frameworks
from trainflow.data import DataConnector
from trainflow.data.sinks import PartsFolder, drop_staging, load_table, staging_folder
from trainflow.data.sql import normalise_database
from trainflow.distributors.ingest import check_training_schema
from trainflow.distributors.scoring import score_to_parts
from trainflow.errors import DataError, SchemaValidationError
from trainflow.frameworks import Framework
from trainflow.lineage.digest import total
from trainflow.lineage.record import DataRecord
from trainflow.pipeline.load import check_rows, open_source
from trainflow.secrets import mask_text, resolve_env
from trainflow.spec import JobSpec, ScoreSpec
from trainflow.spec.score import RUN_ID_COLUMN
from trainflow.validation import build_schema, format_report


@dataclass(frozen=True)
class ScoringModel:
    """The version that scores: framework, loaded model, feature columns, the spec it was trained with."""

    uri: str  # models:/name/N, whatever alias the spec named
    run_id: str
    framework: Framework
    model: Any
    features: list[str]
    training_spec: JobSpec | None  # None for a version registered without trainflow's lineage


@dataclass(frozen=True)
class ScoringInput:
    data: DataConnector
    record: DataRecord
    categories: dict[str, list]


@dataclass(frozen=True)
class ScoreResult:
    """What a scoring run wrote: rows, parts, where, and its MLflow run (once recorded)."""

    run_id: str
    rows: int
    parts: int
    sink: str
    model: str
    mlflow_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "rows": self.rows, "parts": self.parts, "sink": self.sink,
                "model": self.model, "mlflow_run_id": self.mlflow_run_id}


def new_run_id() -> str:
    return uuid.uuid4().hex


def resolve(spec: ScoreSpec) -> ScoringModel:
    """Load the spec's model version (an alias resolved once, here) and what it was trained on."""
    from trainflow.lineage.store import read_lineage
    from trainflow.registry import (
        download_model,
        recorded_features,
        tracking_uri,
        version_record,
    )
    from trainflow.spec import spec_from_yaml_text

    record = version_record(spec.model)
    if not record.framework:
        raise DataError(f"{record.uri} records no framework (run tag trainflow.framework): register it with trainflow, "
                        "or score it with the model's own API.")
    fw = frameworks.get(record.framework)
    local = tempfile.mkdtemp(prefix="trainflow-score-")
    try:
        folder = download_model(record.uri, local)
        features = recorded_features(record, tempfile.mkdtemp(dir=local))
        if not features:
            raise DataError(f"{record.uri} records no feature list (run tag trainflow.features): register it with "
                            "trainflow, or score it with the model's own API.")
        model = fw.load_registered(folder)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    training = None
    if "trainflow.spec_hash" in record.tags:
        stored = read_lineage(record.uri, tracking_uri(), with_spec=True).lineage.spec_yaml
        training = spec_from_yaml_text(stored, source=f"the spec stored with {record.uri}")
    return ScoringModel(record.uri, record.run_id, fw, model, list(features), training)


def check(spec: ScoreSpec, model: ScoringModel) -> ScoringInput:
    """The input as one fixed set of rows, checked against the model's training schema and digested."""
    data = open_source(spec.source, "source").snapshot()
    missing = [c for c in spec.carry if c not in data.columns]
    if missing:
        raise DataError(f"carry column(s) {missing} are not in the scoring source ({data.describe()}); it has "
                        f"{data.columns}. Fix `carry` or the source.")
    adapter = model.framework.scorer()
    categories = adapter.feature_categories(model.model, data.schema, model.features)
    check_training_schema(data, model.features, None, f"scoring data for {model.uri}", categorical=list(categories))
    columns = list(dict.fromkeys([*model.features, *spec.carry]))
    if data.count_rows() == 0:
        digest = total(columns, [])
    else:
        schema = _feature_checks(model)
        failures, digest = check_rows(schema, columns, data, "scoring data")
        if failures:
            for f in failures:
                f["data"] = "scoring data"
            raise SchemaValidationError(format_report(failures, f"the scoring data ({data.describe()}), checked "
                                                                f"against the training schema of {model.uri}"), failures)
    record = DataRecord("scoring", data.origin(), "all rows", digest.rows, digest.hexdigest, digest.columns)
    return ScoringInput(data, record, categories)


def _feature_checks(model: ScoringModel):
    """The training spec's column checks on the features only: no label, no other column, and none of
    its table-wide checks (they may name the label); a feature it does not declare must be present."""
    import pandera.pandas as pa_pd

    declared = build_schema(model.training_spec).columns if model.training_spec is not None else {}
    return pa_pd.DataFrameSchema({f: declared.get(f) or pa_pd.Column(None, nullable=True, required=True, name=f)
                                  for f in model.features}, strict=False)


def parts_folder(spec: ScoreSpec, run_id: str) -> PartsFolder:
    """A Parquet sink's own folder, or a table sink's staging folder beside its database."""
    if spec.sink.kind == "parquet":
        return PartsFolder(resolve_env(spec.sink.parquet, "sink.parquet"))
    return staging_folder(_sink_database(spec).partition(":")[2], run_id)


def _sink_database(spec: ScoreSpec) -> str:
    return normalise_database(resolve_env(spec.sink.resolved_database, "sink.database"))


def _parts_written(part_rows: list[int]) -> int:
    """Parts the tasks wrote: a task whose shard had no rows writes none."""
    return sum(1 for rows in part_rows if rows)


def score(spec: ScoreSpec, model: ScoringModel, data: ScoringInput, run_id: str) -> list[int]:
    """Every input row scored into the run's Parquet parts (the run's earlier parts deleted first)."""
    folder = parts_folder(spec, run_id)
    folder.clear(run_id)
    if data.record.rows == 0:
        return []
    try:
        written = score_to_parts(model.framework.scorer(), model.model, data.data, model.features, list(spec.carry),
                                 spec.prediction_column, RUN_ID_COLUMN, run_id, folder, data.categories or None)
    except BaseException:
        folder.clear(run_id)  # a failed run leaves no part of its output for readers to find
        raise
    folder.clear(run_id, temporary_only=True)  # what SIGKILLed attempts could not remove themselves
    return written


def publish(spec: ScoreSpec, run_id: str, part_rows: list[int]) -> int:
    """A table sink gets the run's rows in one transaction (replacing that run id's rows); a Parquet
    sink already holds its parts. Returns the rows the sink holds for the run, after checking they
    are every row the workers wrote (a part they wrote where this process cannot see it is an error)."""
    folder = parts_folder(spec, run_id)
    parts = folder.parts(run_id)
    written = _parts_written(part_rows)
    if len(parts) != written:
        raise DataError(f"The scoring tasks wrote {written} part(s) for run {run_id} but {len(parts)} are in "
                        f"{mask_text(folder.location)}: the workers' disk is not this machine's. Use a shared "
                        "folder or URI (a Parquet sink on s3://, or the database on shared storage).")
    if spec.sink.kind == "parquet":
        return sum(part_rows)
    rows = load_table(_sink_database(spec), spec.sink.table, parts, run_id, RUN_ID_COLUMN)
    if rows != sum(part_rows):
        raise DataError(f"Table {spec.sink.table!r} holds {rows} rows of run {run_id} after the load, but the "
                        f"parts have {sum(part_rows)}. Nothing else should write this run id; rerun the job.")
    drop_staging(folder)  # only after a load that holds every row: a retried publish needs the parts
    return rows


def sink_text(spec: ScoreSpec) -> str:
    if spec.sink.kind == "parquet":
        return f"parquet {mask_text(spec.sink.parquet)}"
    return f"table {spec.sink.table} in {mask_text(spec.sink.resolved_database)}"


def record(spec: ScoreSpec, model: ScoringModel, data: ScoringInput, run_id: str, rows: int, part_rows: list[int],
           flow_run: dict[str, str] | None = None) -> ScoreResult:
    """Log the scoring run's lineage to MLflow (experiment = the spec's name)."""
    parts = _parts_written(part_rows)
    from trainflow.lineage.store import log_scoring_run
    from trainflow.registry import tracking_uri

    params = {"model": model.uri, "sink": sink_text(spec), "rows": rows, "parts": parts, "run_id": run_id,
              "carry": ",".join(spec.carry), "prediction_column": spec.prediction_column}
    tags = {"trainflow.score_run_id": run_id, "trainflow.model_run": model.run_id,
            **{f"trainflow.flow_run.{k}": str(v) for k, v in (flow_run or {}).items() if v}}
    mlflow_run = log_scoring_run(spec.name, tracking_uri(), model.uri, data.record, params, tags)
    return ScoreResult(run_id, rows, parts, sink_text(spec), model.uri, mlflow_run)


def run_scoring(spec: ScoreSpec, run_id: str | None = None) -> ScoreResult:
    """The whole job without Prefect (library use): resolve, check, score, publish, record."""
    run_id = run_id or new_run_id()
    model = resolve(spec)
    data = check(spec, model)
    part_rows = score(spec, model, data, run_id)
    rows = publish(spec, run_id, part_rows)
    return record(spec, model, data, run_id, rows, part_rows)
