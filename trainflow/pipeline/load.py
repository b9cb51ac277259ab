"""Load: open the spec's data sources lazily and validate them with pandera, batch by batch, on Ray."""
from __future__ import annotations

from dataclasses import dataclass, field

from trainflow.data import DataConnector, connect
from trainflow.data.sources import sample_blocks
from trainflow.errors import DataChangedError, DataError, SchemaValidationError
from trainflow.lineage.digest import ContentDigest, batch_digest, total
from trainflow.lineage.record import DataRecord, Reproduction, report_digest
from trainflow.secrets import resolve_env
from trainflow.spec import JobSpec, SourceSpec
from trainflow.distributors.ingest import remote
from trainflow.uniqueness import UniqueKey, duplicate_records, partition_keys, unique_keys, without_uniqueness
from trainflow.validation import build_schema, format_report, merge_reports, validate_frame
from trainflow.waiting import bounded_get

VALIDATE_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class LoadedData:
    """References to the run's validated data snapshot (no rows): what every later step reads.

    `train` and `eval` are stable connectors (tables and Parquet in place, queries read once into
    Ray's object store), so validation, the eval split, fit, evaluate and the registered input
    example see the same rows. `release()` at the end of the run frees the snapshot.
    """

    train: DataConnector
    eval: DataConnector
    train_rows: int
    eval_rows: int
    eval_source: str
    report: list[dict] = field(default_factory=list)
    #: the train and eval snapshots for lineage (origin, rows, content digest), made while validating
    records: tuple[DataRecord, ...] = ()
    validation_digest: str = ""

    def release(self) -> None:
        """Drop the snapshot blocks this run read (a no-op for data read in place)."""
        self.train.source.release()
        self.eval.source.release()


def open_source(source: SourceSpec, where: str = "data.train") -> DataConnector:
    """A connector for one spec source; `${env:NAME}` in its location is resolved here."""
    if source.kind == "parquet":
        return DataConnector.from_parquet(resolve_env(source.parquet, f"{where}.parquet"))
    database = resolve_env(source.resolved_database, f"{where}.database")
    if source.kind == "table":
        return DataConnector.from_dataframe(connect(database).table(source.table))
    return DataConnector.from_sql(source.sql, database=database)


def open_data(spec: JobSpec) -> tuple[DataConnector, DataConnector, str]:
    """(train, eval, how eval was chosen) as the run's snapshot; without an eval source, a
    block-sampled `eval_fraction` of the training snapshot (disjoint from the rest, together all)."""
    train = open_source(spec.data.train).snapshot()
    if spec.data.eval is not None:
        return train, open_source(spec.data.eval, "data.eval").snapshot(), "eval source"
    rest, sample = sample_blocks(train.source, spec.data.eval_fraction, seed=0)
    return DataConnector(rest), DataConnector(sample), f"{spec.data.eval_fraction:.0%} of the training rows"


def required_columns(spec: JobSpec) -> list[str]:
    declared = list(spec.schema_.columns) if not isinstance(spec.schema_, str) and spec.schema_ else []
    return list(dict.fromkeys(declared + list(spec.features) + [spec.label]))


def check_columns(spec: JobSpec, train: DataConnector, evaluation: DataConnector) -> None:
    """Features and label exist in both; eval has the training columns (a mismatch is named)."""
    needed = list(spec.features) + [spec.label]
    train_cols = train.columns
    for conn, what in ((train, "training data"), (evaluation, "eval data")):
        cols = train_cols if conn is train else conn.columns
        missing = [c for c in needed if c not in cols]
        if missing:
            raise DataError(
                f"Column(s) {missing} named in `features`/`label` are missing from the {what} "
                f"({conn.describe()}); it has {cols}. Fix the spec or the data source."
            )
    train_types = {name: train.schema.field(name).type for name in needed}
    eval_types = {name: evaluation.schema.field(name).type for name in needed}
    differ = {n: (str(train_types[n]), str(eval_types[n])) for n in needed
              if not _compatible(train_types[n], eval_types[n])}
    if differ:
        raise DataError(
            f"The eval data ({evaluation.describe()}) has different column types from the training data: "
            + ", ".join(f"{n}: train {a} vs eval {b}" for n, (a, b) in differ.items())
            + ". Make both sources produce the same schema (CAST in SQL)."
        )


def _compatible(a, b) -> bool:
    import pyarrow.types as pat

    numeric = lambda t: pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)  # noqa: E731
    return a == b or (numeric(a) and numeric(b))


def validate(spec: JobSpec, connector: DataConnector, what: str) -> list[dict]:
    """Run the spec's pandera schema over every row, one Ray task per shard, batch by batch.

    Row-wise checks run on each batch; `unique` is checked over the whole data by hash partitions
    (trainflow.uniqueness), so duplicates in different batches or shards are found.
    """
    return validate_and_digest(spec, connector, what)[0]


def validate_and_digest(spec: JobSpec, connector: DataConnector, what: str) -> tuple[list[dict], ContentDigest]:
    """`validate`, and in the same read the content digest of the checked columns (for lineage)."""
    columns = [c for c in required_columns(spec) if c in connector.columns]
    return check_rows(build_schema(spec), columns, connector, what)


def check_rows(schema, columns: list[str], connector: DataConnector, what: str) -> tuple[list[dict], ContentDigest]:
    """A pandera schema over every row of `columns` (one Ray task per shard, batch by batch; `unique`
    over the whole data) and the content digest of those columns, in one read."""
    import ray

    from trainflow.cluster import ensure_cluster

    ensure_cluster()
    keys = unique_keys(schema)
    rows = connector.count_rows()
    if rows == 0:
        raise DataError(f"The {what} ({connector.describe()}) has no rows; there is nothing to train on.")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    shards = connector.split(max(1, min(cpus * 2, -(-rows // 200_000))))
    parts = max(1, min(cpus * 2, -(-rows // 1_000_000))) if keys else 0
    offsets, start = [], 0
    for shard in shards:
        offsets.append(start)
        start += shard.count_rows()
    task = remote(_validate_shard).options(num_returns=1 + parts)
    row_schema = without_uniqueness(schema)
    outputs = [task.remote(s, row_schema, keys, parts, columns, off)
               for s, off in zip(shards, offsets)]
    outputs = [out if parts else [out] for out in outputs]
    dedup = remote(_duplicates_in_partition)
    checks = [dedup.remote(keys, *[out[1 + p] for out in outputs]) for p in range(parts)]
    where = f"validating the {what} ({len(shards)} shard task(s), {parts} uniqueness task(s))"
    shard_results = bounded_get([out[0] for out in outputs] + checks, where)
    reports = [r for r, _ in shard_results[:len(outputs)]] + shard_results[len(outputs):]
    return merge_reports(reports), total(columns, [d for _, d in shard_results[:len(outputs)]])


def _validate_shard(shard: DataConnector, schema, keys: list[UniqueKey], parts: int, columns: list[str],
                    offset: int):
    """Row-wise report of one shard, then (when `keys`) its keys, one object per hash partition."""
    reports, pieces = [], [[] for _ in range(parts)]
    digest = total(columns, [])
    for batch in shard.iter_batches(columns, VALIDATE_BATCH_ROWS):
        digest = digest + batch_digest(batch, columns)
        frame = batch.to_pandas()
        reports.append(validate_frame(frame, schema, row_offset=offset))
        if parts:
            for p, piece in enumerate(partition_keys(frame, keys, parts, offset)):
                pieces[p].append(piece)
        offset += batch.num_rows
    merged = (merge_reports(reports), digest)
    if not parts:
        return merged
    return (merged, *[_concat_pieces(keys, piece) for piece in pieces])


def _concat_pieces(keys: list[UniqueKey], batches: list[list]) -> list:
    import pandas as pd

    return [pd.concat([b[k] for b in batches], ignore_index=True) if batches else pd.DataFrame()
            for k in range(len(keys))]


def _duplicates_in_partition(keys: list[UniqueKey], *pieces) -> list[dict]:
    return duplicate_records(keys, pieces)


def load(spec: JobSpec, reproduce: Reproduction | None = None) -> LoadedData:
    """Open and validate; raise SchemaValidationError (with the report) when any check fails, and
    DataChangedError when `reproduce` names data whose values are not what this run reads."""
    train, evaluation, eval_source = open_data(spec)
    check_columns(spec, train, evaluation)
    report, records = [], []
    for conn, what, context in ((train, "training data", "training"), (evaluation, "eval data", "eval")):
        failures, digest = validate_and_digest(spec, conn, what)
        if failures:
            for record in failures:
                record["data"] = what
            report.extend(failures)
            message = format_report(failures, f"the {what} ({conn.describe()})")
            raise SchemaValidationError(message, report)
        selection = "all rows" if spec.data.eval is not None else (
            f"{eval_source}, block-sampled with seed 0" if context == "eval" else
            f"all but the eval sample ({eval_source})")
        records.append(DataRecord(context, conn.origin(), selection, digest.rows, digest.hexdigest, digest.columns))
    if reproduce is not None:
        check_expected(tuple(records), list(reproduce.data), reproduce.version)
    schema = spec.model_dump(mode="json", by_alias=True).get("schema")
    checked = report_digest(schema, report, {r.context: r.rows for r in records})
    return LoadedData(train, evaluation, records[0].rows, records[1].rows, eval_source, report,
                      tuple(records), checked)


def check_expected(records: tuple[DataRecord, ...], expected: list[DataRecord], what: str) -> None:
    """Refuse data whose values differ from `expected` (a version's records), naming what changed."""
    now = {r.context: r for r in records}
    changes = [c for e in expected if e.context in now for c in e.differences(now[e.context])]
    if changes:
        raise DataChangedError(
            f"The data is not what {what} was trained on: " + "; ".join(changes)
            + ". Restore that data (or point the spec at a copy of it) to reproduce; a rerun on the new "
            "data is `trainflow run` with the spec.", changes)

