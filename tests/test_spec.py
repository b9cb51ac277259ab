"""trainflow.spec: the job-spec model, its defaults, its error messages and YAML/override loading."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from trainflow.errors import ConfigError
from trainflow.spec import JobSpec, SpecError, load_spec, parse_spec, spec_from_yaml_text

EXAMPLE = """\
name: credit-risk-xgboost              # also the MLflow experiment name
data:
  train: {table: TRAINING_DATA, database: data/warehouse.duckdb}   # or {parquet: path-or-uri}
  eval:  {table: EVAL_DATA, database: data/warehouse.duckdb}       #   or {sql: "SELECT ...", database: ...}
  eval_fraction: 0.2                   # used only when eval is absent
schema:                                # pandera checks inline, or "package.module:DataFrameModelClass"
  columns:
    age: {dtype: int64, ge: 18, le: 110}
    income: {dtype: float64, ge: 0}
    credit_score: {dtype: int64, ge: 300, le: 850}
    default_risk: {dtype: float64, ge: 0, le: 1}
features: [age, income, credit_score]
label: default_risk
trainer:
  framework: xgboost                   # xgboost | lightgbm | pytorch
  n_estimators: 100
  objective: reg:squarederror
  params: {max_depth: 6, learning_rate: 0.1}
  scaling: {num_workers: -1, num_cpu_per_worker: -1, use_gpu: null}
  verbose_eval: 10
  # pytorch: train_func: "package.module:function", hyper_params: {...},
  #          scaling: {num_nodes: 1, num_workers_per_node: 2, num_cpus: 1, num_gpus: 0}
evaluate: {metrics: [rmse, mae, r2]}
register:
  model_name: credit-risk
  promote_on: {metric: rmse, mode: min}
schedule: {cron: "0 2 * * *", timezone: UTC}   # read by deployments only
"""

MINIMAL = {
    "name": "job",
    "data": {"train": {"parquet": "data/train.parquet"}},
    "features": ["a", "b"],
    "label": "y",
    "register": {"model_name": "m"},
}


def minimal(**changes) -> dict:
    """A minimal valid spec dict with top-level keys replaced."""
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


@pytest.fixture
def example_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(EXAMPLE)
    return path


def spec_error(data: dict) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value


# ------------------------------------------------------------------------------------ happy paths
def test_architecture_example_parses(example_file: Path) -> None:
    spec = load_spec(example_file)
    assert spec.name == "credit-risk-xgboost"
    assert spec.data.train.table == "TRAINING_DATA" and spec.data.train.kind == "table"
    assert spec.data.eval is not None and spec.data.eval.table == "EVAL_DATA"
    assert spec.schema_.columns["age"].ge == 18 and spec.schema_.columns["age"].dtype == "int64"
    assert spec.schema_.columns["default_risk"].le == 1
    assert spec.features == ["age", "income", "credit_score"]
    assert spec.trainer.params == {"max_depth": 6, "learning_rate": 0.1}
    assert spec.trainer.scaling.use_gpu is None
    assert spec.resolved_metrics == ["rmse", "mae", "r2"]
    assert spec.resolved_promotion.metric == "rmse" and spec.resolved_promotion.mode == "min"
    assert spec.schedule.cron == "0 2 * * *" and spec.schedule.timezone == "UTC"
    assert spec.task == "regression"


def test_defaults_fill_in() -> None:
    spec = parse_spec(minimal())
    assert spec.data.eval is None and spec.data.eval_fraction == 0.2
    assert spec.data.train.database is None  # parquet needs no database
    assert spec.schema_ is None and spec.schedule is None
    trainer = spec.trainer
    assert (trainer.framework, trainer.n_estimators, trainer.objective) == ("xgboost", 100, None)
    assert trainer.resolved_objective == "reg:squarederror"
    assert trainer.params == {} and trainer.hyper_params == {} and trainer.train_func is None
    assert trainer.verbose_eval == 10
    scaling = trainer.scaling
    assert (scaling.num_workers, scaling.num_cpu_per_worker, scaling.use_gpu) == (-1, -1, None)
    assert (scaling.num_nodes, scaling.num_workers_per_node, scaling.num_cpus, scaling.num_gpus) == (1, 1, 1, 0)
    assert spec.resolved_metrics == ["rmse", "mae", "r2"]
    promotion = spec.resolved_promotion
    assert (promotion.metric, promotion.mode) == ("rmse", "min")
    # the fields keep what the user wrote (None): derived values are not written back
    assert spec.evaluate.metrics is None and spec.register.promote_on is None


def test_table_source_gets_default_database() -> None:
    spec = parse_spec(minimal(data={"train": {"table": "T"}, "eval": {"sql": "SELECT 1"}}))
    assert spec.data.train.resolved_database == "data/warehouse.duckdb" and spec.data.train.database is None
    assert spec.data.eval.resolved_database == "data/warehouse.duckdb" and spec.data.eval.kind == "sql"


@pytest.mark.parametrize(
    ("trainer", "task", "metrics", "promote"),
    [
        ({"framework": "lightgbm"}, "regression", ["rmse", "mae", "r2"], ("rmse", "min")),
        ({"objective": "binary:logistic"}, "binary", ["auc", "logloss", "accuracy"], ("auc", "max")),
        ({"framework": "lightgbm", "objective": "binary"}, "binary", ["auc", "logloss", "accuracy"], ("auc", "max")),
        ({"objective": "multi:softprob"}, "multiclass", ["mlogloss", "accuracy"], ("mlogloss", "min")),
        ({"objective": "count:poisson"}, "regression", ["rmse", "mae", "r2"], ("rmse", "min")),
    ],
)
def test_task_and_default_metrics_follow_objective(trainer, task, metrics, promote) -> None:
    spec = parse_spec(minimal(trainer=trainer))
    assert spec.task == task
    assert spec.resolved_metrics == metrics
    assert (spec.resolved_promotion.metric, spec.resolved_promotion.mode) == promote


def test_lightgbm_default_objective() -> None:
    assert parse_spec(minimal(trainer={"framework": "lightgbm"})).trainer.resolved_objective == "regression"


def test_promote_mode_inferred_from_metric() -> None:
    spec = parse_spec(minimal(
        evaluate={"metrics": ["rmse", "r2"]}, register={"model_name": "m", "promote_on": {"metric": "r2"}}
    ))
    assert spec.resolved_promotion.mode == "max" and spec.register.promote_on.mode is None


def test_pytorch_spec() -> None:
    spec = parse_spec(minimal(trainer={
        "framework": "pytorch",
        "train_func": "my_pkg.train:train_func",
        "hyper_params": {"lr": "0.01"},
        "scaling": {"num_nodes": 1, "num_workers_per_node": 2, "num_cpus": 1, "num_gpus": 0},
    }))
    assert spec.trainer.scaling.num_workers_per_node == 2
    assert spec.task == "regression"


def test_dump_round_trips_with_schema_alias(example_file: Path) -> None:
    spec = load_spec(example_file)
    dumped = spec.model_dump()
    assert "schema" in dumped and "schema_" not in dumped
    assert parse_spec(dumped) == spec
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_schema_reference_and_field_name_accepted() -> None:
    assert parse_spec(minimal(schema="my_pkg.schemas:Training")).schema_ == "my_pkg.schemas:Training"
    assert parse_spec(minimal(schema_="my_pkg.schemas:Training")).schema_ == "my_pkg.schemas:Training"


def test_json_schema_is_a_described_form() -> None:
    schema = JobSpec.model_json_schema()
    models = [schema, *schema["$defs"].values()]
    for model in models:
        for key, prop in model.get("properties", {}).items():
            assert prop.get("description"), f"{model.get('title')}.{key} has no description"
    trainer = schema["$defs"]["TrainerSpec"]["properties"]
    assert trainer["framework"]["enum"] == ["xgboost", "lightgbm", "pytorch"]
    assert trainer["n_estimators"]["minimum"] == 1
    assert "schema" in schema["properties"]


# -------------------------------------------------------------------------------- error messages
def test_spec_error_is_config_error_and_one_paragraph() -> None:
    err = spec_error(minimal(colour="red", trainer={"n_estimators": 0}))
    assert isinstance(err, ConfigError)
    assert "\n" not in str(err)
    assert len(err.problems) == 2


def test_unknown_top_level_key_lists_accepted_keys() -> None:
    err = spec_error(minimal(colour="red"))
    assert "colour: unknown key" in str(err)
    assert "accepted: name, data, schema, features, label, trainer, evaluate, register, tune, schedule" in str(err)


def test_unknown_nested_key_names_path_and_suggests() -> None:
    err = spec_error(minimal(trainer={"scaling": {"num_worker": 2}}))
    assert "trainer.scaling.num_worker: unknown key" in str(err)
    assert "did you mean 'num_workers'" in str(err)
    assert "num_cpu_per_worker" in str(err) and "num_gpus" in str(err)


def test_unknown_key_inside_schema_column() -> None:
    err = spec_error(minimal(schema={"columns": {"age": {"minimum": 18}}}))
    assert "schema.columns.age.minimum: unknown key" in str(err)
    assert "accepted: dtype, ge, le, gt, lt, isin, nullable, unique, regex" in str(err)


def test_unknown_key_in_source() -> None:
    err = spec_error(minimal(data={"train": {"parquet": "x", "format": "csv"}}))
    assert "data.train.format: unknown key (accepted: table, sql, parquet, database)" in str(err)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"trainer": {"n_estimators": "many"}}, "trainer.n_estimators: input should be a valid integer"),
        ({"trainer": {"n_estimators": 0}}, "trainer.n_estimators: input should be greater than or equal to 1"),
        ({"data": {"train": {"parquet": "x"}, "eval_fraction": 1.5}}, "data.eval_fraction: input should be less than 1"),
        ({"features": "age"}, "features: input should be a valid list"),
        ({"features": []}, "features: list should have at least 1 item"),
        ({"features": ["a", "a"]}, "features: duplicate features: a"),
        ({"trainer": {"framework": "sklearn"}}, "trainer.framework: 'sklearn' is not accepted (accepted: xgboost, lightgbm, pytorch)"),
        ({"evaluate": {"metrics": ["rmse", "mape"]}}, "evaluate.metrics[1]: 'mape' is not accepted"),
        ({"schema": {"columns": {"age": {"dtype": "int8"}}}}, "schema.columns.age.dtype: 'int8' is not accepted (accepted: int64, int32"),
        ({"schema": {"columns": {"age": {"regex": "("}}}}, "schema.columns.age.regex: not a valid regular expression"),
        ({"schema": 5}, 'schema: must be "package.module:DataFrameModelClass" or {columns: {...}}'),
        ({"schema": "no_colon"}, 'schema: must be "package.module:name"'),
        ({"name": "my job"}, "name: may contain only letters, digits"),
        ({"trainer": 3}, "trainer: must be a mapping with keys framework, n_estimators"),
        ({"trainer": {"scaling": {"num_workers": 0}}}, "trainer.scaling.num_workers: 0 is not allowed (accepted: -1"),
        ({"trainer": {"scaling": {"use_gpu": "maybe"}}}, "trainer.scaling.use_gpu: input should be a valid boolean"),
        ({"schedule": {"interval_seconds": 10}}, "schedule.interval_seconds: input should be greater than or equal to 60"),
        ({"trainer": {"max_restarts": -1}}, "trainer.max_restarts: input should be greater than or equal to 0"),
        ({"trainer": {"checkpoint_every": 0}}, "trainer.checkpoint_every: input should be greater than or equal to 1"),
    ],
)
def test_wrong_values_name_their_path(changes: dict, expected: str) -> None:
    assert expected in str(spec_error(minimal(**changes)))


def test_missing_required_key() -> None:
    data = minimal()
    del data["label"]
    assert "label: required but missing" in str(spec_error(data))


def test_objective_checked_against_framework() -> None:
    err = spec_error(minimal(trainer={"framework": "lightgbm", "objective": "reg:squarederror"}))
    assert "trainer.objective: 'reg:squarederror' is not a lightgbm objective" in str(err)
    assert "accepted: regression, regression_l1, huber, binary, multiclass, poisson, gamma, tweedie" in str(err)
    err = spec_error(minimal(trainer={"objective": "binary"}))
    assert "'binary' is not a xgboost objective" in str(err) and "binary:logistic" in str(err)


def test_params_cannot_set_the_objective_behind_the_task() -> None:
    """params win over trainer.objective in the estimators, so params.objective would train one
    objective (binary:hinge, which predicts no probability) while evaluate scores another's task."""
    err = spec_error(minimal(trainer={"params": {"objective": "binary:hinge"}}))
    assert "trainer.params.objective: sets the objective" in str(err) and "set trainer.objective" in str(err)
    err = spec_error(minimal(trainer={"framework": "lightgbm", "objective": "binary",
                                      "params": {"application": "multiclassova"}}))
    assert "trainer.params.application: sets the objective" in str(err)
    same = parse_spec(minimal(trainer={"objective": "binary:logitraw", "params": {"objective": "binary:logitraw"}}))
    assert same.task == "binary"


# ------------------------------------------------------------------------ impossible combinations
def test_no_data_source() -> None:
    err = spec_error(minimal(data={"train": {"database": "x.duckdb"}}))
    assert "data.train: give exactly one of table, sql or parquet (got none)" in str(err)


def test_two_data_sources() -> None:
    err = spec_error(minimal(data={"train": {"parquet": "x"}, "eval": {"table": "T", "sql": "SELECT 1"}}))
    assert "data.eval: give exactly one of table, sql or parquet (got table, sql)" in str(err)


def test_database_with_parquet() -> None:
    err = spec_error(minimal(data={"train": {"parquet": "x", "database": "y.duckdb"}}))
    assert "data.train.database: applies only to table or sql sources" in str(err)


def test_label_in_features() -> None:
    err = spec_error(minimal(features=["a", "y"]))
    assert "label: 'y' is also listed in features" in str(err)


def test_pytorch_needs_train_func() -> None:
    err = spec_error(minimal(trainer={"framework": "pytorch"}))
    assert "trainer.train_func: required for framework pytorch" in str(err)


def test_train_func_forbidden_for_boosters() -> None:
    err = spec_error(minimal(trainer={"train_func": "pkg.mod:fn"}))
    assert "trainer.train_func: only for framework pytorch" in str(err)


def test_scaling_fields_of_the_other_framework() -> None:
    err = spec_error(minimal(trainer={"scaling": {"num_nodes": 2}}))
    assert "trainer.scaling.num_nodes: not used by xgboost (accepted: num_workers, num_cpu_per_worker, use_gpu)" in str(err)
    err = spec_error(minimal(trainer={"framework": "pytorch", "train_func": "p.m:f", "scaling": {"use_gpu": True}}))
    assert "trainer.scaling.use_gpu: not used by pytorch" in str(err)


def test_checkpoint_every_is_for_boosters_only() -> None:
    err = spec_error(minimal(trainer={"framework": "pytorch", "train_func": "p.m:f", "checkpoint_every": 5}))
    assert "trainer.checkpoint_every: only for xgboost/lightgbm" in str(err)
    spec = parse_spec(minimal(trainer={"checkpoint_every": None, "max_restarts": 0}))
    assert spec.trainer.checkpoint_every is None and spec.trainer.max_restarts == 0


def test_auc_on_regression() -> None:
    err = spec_error(minimal(evaluate={"metrics": ["rmse", "auc"]}))
    assert "evaluate.metrics: auc does not fit the regression objective reg:squarederror" in str(err)
    assert "(accepted: rmse, mae, r2)" in str(err)


def test_promote_metric_not_in_metrics() -> None:
    err = spec_error(minimal(
        evaluate={"metrics": ["rmse"]}, register={"model_name": "m", "promote_on": {"metric": "mae"}}
    ))
    assert "register.promote_on.metric: 'mae' is not in evaluate.metrics (accepted: rmse)" in str(err)


def test_promote_mode_against_metric_direction() -> None:
    err = spec_error(minimal(register={"model_name": "m", "promote_on": {"metric": "rmse", "mode": "max"}}))
    assert "register.promote_on.mode" in str(err) and "(accepted: min)" in str(err)


def test_schedule_with_cron_and_interval() -> None:
    err = spec_error(minimal(schedule={"cron": "0 2 * * *", "interval_seconds": 3600}))
    assert "schedule: give exactly one of cron or interval_seconds (got both)" in str(err)


def test_schedule_checks_cron_and_timezone() -> None:
    err = spec_error(minimal(schedule={"cron": "every day", "timezone": "Mars/Olympus"}))
    assert "schedule.cron: 'every day' is not a cron expression" in str(err)
    assert "schedule.timezone: unknown timezone 'Mars/Olympus'" in str(err)
    assert parse_spec(minimal(schedule={"interval_seconds": 3600})).schedule.interval_seconds == 3600


# -------------------------------------------------------------------------------------- overrides
def test_overrides_coerce_types_and_reach_nested_keys(example_file: Path) -> None:
    spec = load_spec(example_file, [
        "trainer.n_estimators=300",
        "trainer.scaling.use_gpu=true",
        "trainer.params.max_depth=8",
        "trainer.params.subsample=0.5",
        "features=[age, income]",
        "schedule=null",
        "data.eval=",
        "schema.columns.age.ge=21",
        "name=other.name",
    ])
    assert spec.trainer.n_estimators == 300 and isinstance(spec.trainer.n_estimators, int)
    assert spec.trainer.scaling.use_gpu is True
    assert spec.trainer.params == {"max_depth": 8, "learning_rate": 0.1, "subsample": 0.5}
    assert spec.features == ["age", "income"]
    assert spec.schedule is None and spec.data.eval is None
    assert spec.schema_.columns["age"].ge == 21
    assert spec.name == "other.name"


def test_override_creates_missing_sections() -> None:
    spec = spec_from_yaml_text(
        "name: j\ndata: {train: {parquet: x}}\nfeatures: [a]\nlabel: y\nregister: {model_name: m}\n",
        ["trainer.params.eta=0.3", "schedule.interval_seconds=600"],
    )
    assert spec.trainer.params == {"eta": 0.3}
    assert spec.schedule.interval_seconds == 600


def test_override_value_is_still_validated(example_file: Path) -> None:
    with pytest.raises(SpecError, match=r"trainer\.n_estimators: input should be greater than or equal to 1"):
        load_spec(example_file, ["trainer.n_estimators=0"])
    with pytest.raises(SpecError, match=r"trainer\.n_estimatorz: unknown key"):
        load_spec(example_file, ["trainer.n_estimatorz=5"])


@pytest.mark.parametrize("bad", ["trainer.n_estimators", "=5", "trainer..x=1"])
def test_malformed_override(example_file: Path, bad: str) -> None:
    with pytest.raises(SpecError, match="Invalid override") as info:
        load_spec(example_file, [bad])
    assert repr(bad) in str(info.value)


def test_override_into_non_mapping(example_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(example_file, ["features.extra=1"])
    assert "features" in str(info.value) and "not a mapping" in str(info.value)
    with pytest.raises(SpecError, match="not a mapping"):
        load_spec(example_file, ["trainer.n_estimators.deep=1"])


# ---------------------------------------------------------------------------------------- files
def test_missing_spec_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="does not exist") as info:
        load_spec(missing)
    assert str(missing) in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: job\ndata:\n  train: {parquet: x\nfeatures: [a]\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message and "not valid YAML" in message
    assert "line 4" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(EXAMPLE + "label: income\n")
    with pytest.raises(SpecError, match="duplicate key 'label'") as info:
        load_spec(path)
    assert f"line {EXAMPLE.count(chr(10)) + 1}" in str(info.value)
    assert "Keep only one" in str(info.value)


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(SpecError, match="is empty"):
        load_spec(empty)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(listing)


def test_error_names_the_spec_file(example_file: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(example_file, ["label=age"])
    assert str(example_file) in str(info.value)
    assert "label: 'age' is also listed in features" in str(info.value)
