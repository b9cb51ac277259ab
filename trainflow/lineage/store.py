"""Lineage in MLflow: written on the active run and its model version, read back by model URI.

The run gets the spec as `spec.yaml`, everything else as `lineage.json`, flat `trainflow.*` tags, and
one `log_input` per data split (a `MetaDataset`: MLflow keeps the source description and digest, no
rows). The version gets the same tags, the metrics as tags, and a description for its UI page.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Param
from mlflow.exceptions import MlflowException

from trainflow.errors import RegistryError
from trainflow.lineage.record import (
    LINEAGE_FILE,
    SPEC_FILE,
    DataRecord,
    Reproduction,
    RunLineage,
    spec_hash,
)
from trainflow.secrets import flatten_masked, mask_text

if TYPE_CHECKING:
    from trainflow.spec import JobSpec


class TrainflowDataSource(DatasetSource):
    """A data split's origin as trainflow recorded it (files, database and table/query)."""

    def __init__(self, origin: Mapping[str, Any]):
        self._origin = dict(origin)

    @staticmethod
    def _get_source_type() -> str:
        return "trainflow"

    def load(self) -> Any:
        raise NotImplementedError("open the data with trainflow.data (the origin names it)")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> TrainflowDataSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return self._origin

    @classmethod
    def from_dict(cls, source_dict: dict[str, Any]) -> TrainflowDataSource:
        return cls(source_dict)


def log_lineage(lineage: RunLineage, dataset_name: str) -> None:
    """On the active run: tags, `spec.yaml`, `lineage.json` and one dataset input per split."""
    mlflow.set_tags(lineage.tags())
    mlflow.log_text(lineage.spec_yaml, SPEC_FILE)
    mlflow.log_dict(lineage.to_dict(), LINEAGE_FILE)
    for record in lineage.data:
        dataset = MetaDataset(TrainflowDataSource(_compact(record.source)), name=f"{dataset_name}-{record.context}",
                              digest=record.digest)
        mlflow.log_input(dataset, context=record.context, tags=_input_tags(record))


_TAG_MAX, _LISTED_FILES = 500, 100  # MLflow: 500 characters per input tag value, 65535 per dataset source


def _input_tags(record: DataRecord) -> dict[str, str]:
    """The input's tags for display; lineage.json keeps the untruncated record."""
    columns = ",".join(record.columns)
    if len(columns) > _TAG_MAX:
        columns = columns[:_TAG_MAX - 40] + f"... ({len(record.columns)} columns; see lineage.json)"
    return {"rows": str(record.rows), "selection": record.selection[:_TAG_MAX], "columns": columns}


def _compact(origin: Mapping[str, Any]) -> dict[str, Any]:
    """An origin small enough for MLflow's dataset source: the first files and a count (lineage.json
    has them all); long query text cut."""
    out = dict(origin)
    files = out.get("files") or []
    if len(files) > _LISTED_FILES:
        out["files"] = files[:_LISTED_FILES]
        out["files_total"] = len(files)
    if isinstance(out.get("query"), str) and len(out["query"]) > 20_000:
        out["query"] = out["query"][:20_000] + " ..."
    return out


def log_scoring_run(experiment: str, tracking_uri: str, model_uri: str, data: DataRecord,
                    params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """One FINISHED run for a scoring job: which model version scored which input snapshot, and where
    the scores went. Returns its run id."""
    try:
        return _log_scoring_run(experiment, tracking_uri, model_uri, data, params, tags)
    except MlflowException as exc:
        raise RegistryError(f"Recording the scoring run in MLflow ({mask_text(tracking_uri)}) failed: {exc.message}. "
                            "The scores are written; rerun to record it, or check the tracking store.") from None


def _log_scoring_run(experiment: str, tracking_uri: str, model_uri: str, data: DataRecord,
                     params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    from trainflow.registry import experiment_id

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(experiment_id(client, experiment), run_name=f"{experiment}-scoring",
                            tags={"trainflow.kind": "scoring", "trainflow.model_version": model_uri, **tags})
    try:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten_masked(params).items()])
        dataset = MetaDataset(TrainflowDataSource(_compact(data.source)), name=f"{experiment}-input",
                              digest=data.digest)
        labels = [InputTag("mlflow.data.context", data.context), *[InputTag(k, v) for k, v in _input_tags(data).items()]]
        client.log_inputs(run.info.run_id, [DatasetInput(dataset._to_mlflow_entity(), labels)])
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def version_tags(lineage: RunLineage, spec_name: str, metrics: Mapping[str, float]) -> dict[str, str]:
    """Tags for the model version's page: the lineage tags, the spec's name and the metrics."""
    return {**lineage.tags(), "trainflow.spec": spec_name,
            **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}


# ------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class VersionLineage:
    """A registered version with what its run recorded: for `trainflow lineage` and `reproduce`."""

    name: str
    version: str
    aliases: list[str]
    run_id: str
    experiment: str
    status: str
    lineage: RunLineage
    params: dict[str, str]
    metrics: dict[str, float]
    description: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "uri": self.uri, "aliases": self.aliases,
                "run_id": self.run_id, "experiment": self.experiment, "status": self.status,
                "params": self.params, "metrics": self.metrics, **self.lineage.to_dict()}


def read_lineage(uri: str, tracking_uri: str, with_spec: bool = False) -> VersionLineage:
    """What the version behind `models:/name/N` or `models:/name@alias` records, read from its run's
    tags and inputs (no artifact download: `trainflow lineage` answers in a few seconds); the stored
    spec too `with_spec` (checked against its recorded hash). Errors name the fix."""
    from trainflow.registry import model_version

    client, mv = model_version(uri, tracking_uri)
    run = client.get_run(mv.run_id)
    if "trainflow.spec_hash" not in run.data.tags:
        raise RegistryError(f"{uri} (run {mv.run_id}) has no lineage record: it was registered before trainflow "
                            "recorded lineage, or not by trainflow.")
    lineage = _from_run(run)
    if with_spec:
        try:
            text = _artifact_text(client, mv.run_id, SPEC_FILE)
        except (OSError, MlflowException) as exc:
            raise RegistryError(f"The spec stored with {uri} (artifact {SPEC_FILE} of run {mv.run_id}) cannot be "
                                f"read: {exc}") from None
        if spec_hash(text) != lineage.spec_hash:
            raise RegistryError(f"The spec stored with {uri} does not match its recorded hash "
                                f"{lineage.spec_hash[:12]}: the artifact was changed after registration.")
        try:  # the untruncated records (the run's inputs hold a display copy)
            lineage = RunLineage.from_dict(json.loads(_artifact_text(client, mv.run_id, LINEAGE_FILE)), text)
        except (OSError, MlflowException, ValueError, KeyError) as exc:
            raise RegistryError(f"The lineage record of {uri} (artifact {LINEAGE_FILE} of run {mv.run_id}) cannot be "
                                f"read: {exc}") from None
    experiment = client.get_experiment(run.info.experiment_id)
    return VersionLineage(mv.name, str(mv.version), list(mv.aliases or []), mv.run_id,
                          experiment.name if experiment else run.info.experiment_id, run.info.status,
                          lineage, dict(run.data.params), dict(run.data.metrics), mv.description or "")


def _from_run(run: Any) -> RunLineage:
    tags = run.data.tags
    records = []
    for given in run.inputs.dataset_inputs if run.inputs else []:
        t = {x.key: x.value for x in given.tags}
        records.append(DataRecord(t.get("mlflow.data.context", ""), json.loads(given.dataset.source),
                                  t.get("selection", ""), int(t.get("rows", 0)), given.dataset.digest,
                                  tuple(c for c in t.get("columns", "").split(",") if c)))
    records.sort(key=lambda r: r.context != "training")

    def prefixed(prefix: str) -> dict[str, str]:
        return {k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)}

    return RunLineage("", tags["trainflow.spec_hash"], tuple(records), tags.get("trainflow.validation_digest", ""),
                      prefixed("trainflow.code."), prefixed("trainflow.flow_run."), tags.get("trainflow.reproduces", ""))


def reproduction(uri: str, tracking_uri: str) -> tuple[JobSpec, Reproduction, list[str]]:
    """What `trainflow reproduce` runs: the stored spec with the framework's overrides for the
    recorded placement and threads, the data it must see again, and those overrides."""
    from trainflow import frameworks
    from trainflow.spec import spec_from_yaml_text

    was = read_lineage(uri, tracking_uri, with_spec=True)
    if "framework" not in was.params:
        raise RegistryError(f"{was.uri} (run {was.run_id}) records no framework param: it cannot be rerun as trained.")
    overrides = frameworks.get(was.params["framework"]).reproduce_overrides(was.params)
    spec = spec_from_yaml_text(was.lineage.spec_yaml, overrides, source=f"the spec stored with {was.uri}")
    return spec, Reproduction(was.uri, was.lineage.data), overrides


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    import tempfile
    from pathlib import Path

    from trainflow.registry import quiet_downloads

    with quiet_downloads(), tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()
