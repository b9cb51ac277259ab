"""The job spec's pydantic models: one validated JobSpec = one training job.

The same model is read from YAML by the CLI and is the Prefect flow's only parameter, so every field
carries a description (the UI form's help text), choices are enums (dropdowns; framework and objective
choices come from the registered plug-ins) and limits are `ge`/`le`/`gt`/`lt`.
"""
from __future__ import annotations

from datetime import datetime
import re
import warnings
import zoneinfo
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from trainflow import frameworks
from trainflow.defaults import DEFAULT_CHECKPOINT_EVERY, DEFAULT_DATABASE, DEFAULT_MAX_RESTARTS
from trainflow.distributors.memory import frameworks_with
from trainflow.errors import ConfigError
from trainflow.frameworks.base import Task
from trainflow.spec.base import _NAME, _REF, _join, _Model, _problems

Metric = Literal["rmse", "mae", "r2", "auc", "logloss", "accuracy", "f1", "mlogloss"]
Dtype = Literal[
    "int64", "int32", "float64", "float32", "bool", "str", "string", "category", "datetime64[ns]"
]

# trainer.params keys that would set the objective again (lightgbm's aliases included)
_OBJECTIVE_KEYS = ("objective", "objective_type", "app", "application", "loss")


def _one_of(values: tuple[str, ...]) -> PydanticCustomError:
    return PydanticCustomError("literal_error", "Input should be {expected}",
                               {"expected": " or ".join(repr(v) for v in values)})


def _known_framework(value: Any) -> Any:
    if not isinstance(value, str) or value not in frameworks.names():
        raise _one_of(frameworks.names())
    return value


def _all_objectives() -> tuple[str, ...]:
    """Every loadable plug-in's objectives (a plug-in that fails to load is reported when a spec names it)."""
    found: list[str] = []
    for name in frameworks.names():
        try:
            found.extend(frameworks.get(name).objectives)
        except ConfigError:
            continue
    return tuple(dict.fromkeys(found))


def _known_objective(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or value not in _all_objectives()):
        raise _one_of(_all_objectives())
    return value


# The registered plug-ins' names and objectives, checked when a spec is read and listed in the JSON
# schema (the Prefect UI's dropdowns), so a framework registered as a plug-in is a spec choice too.
FrameworkName = Annotated[str, BeforeValidator(_known_framework)]
ObjectiveName = Annotated[str, BeforeValidator(_known_objective)]
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("rmse", "mae", "r2"),
    "binary": ("auc", "logloss", "accuracy", "f1"),
    "multiclass": ("mlogloss", "accuracy"),
}
DEFAULT_METRICS: dict[str, list[str]] = {
    "regression": ["rmse", "mae", "r2"],
    "binary": ["auc", "logloss", "accuracy"],
    "multiclass": ["mlogloss", "accuracy"],
}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss", "mlogloss"})


def _natural_mode(metric: str) -> Literal["min", "max"]:
    return "min" if metric in LOWER_IS_BETTER else "max"


# ------------------------------------------------------------------------------------------ data
class SourceSpec(_Model):
    """Where rows come from: exactly one of a DuckDB/SQL table, a SQL query or Parquet files."""

    table: str | None = Field(None, min_length=1, description="Table name in `database`.")
    sql: str | None = Field(None, min_length=1, description="SQL query run against `database`.")
    parquet: str | None = Field(
        None, min_length=1, description="Parquet file, folder, glob or URI (s3://, gs://, file://)."
    )
    database: str | None = Field(
        None,
        description=f"Database for `table`/`sql`: DuckDB file path, duckdb:///path or sqlite:///path "
        f"(default {DEFAULT_DATABASE}). Not used with `parquet`.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SourceSpec:
        given = [k for k in ("table", "sql", "parquet") if getattr(self, k) is not None]
        if len(given) != 1:
            got = "none" if not given else _join(given)
            raise _problems(("", f"give exactly one of table, sql or parquet (got {got})"))
        if self.parquet is not None and self.database is not None:
            raise _problems(("database", "applies only to table or sql sources, not parquet"))
        return self

    @property
    def resolved_database(self) -> str | None:
        """The database a table or query is read from (`database`, or the default); None for parquet."""
        return None if self.parquet is not None else self.database or DEFAULT_DATABASE

    @property
    def kind(self) -> Literal["table", "sql", "parquet"]:
        """Which of the three source forms this is."""
        return "table" if self.table is not None else "sql" if self.sql is not None else "parquet"


class DataSpec(_Model):
    """Training data and evaluation data (a separate source, or a held-out fraction of train)."""

    train: SourceSpec = Field(description="Training data source.")
    eval: SourceSpec | None = Field(
        None, description="Evaluation data source; when absent, `eval_fraction` of train is held out."
    )
    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of train held out for evaluation when `eval` is absent."
    )


# ---------------------------------------------------------------------------------------- schema
Bound = Union[int, float, datetime]


class ColumnCheck(_Model):
    """Pandera checks for one column."""

    dtype: Dtype | None = Field(None, description="Expected dtype; not checked when absent.")
    ge: Bound | None = Field(None, description="Every value >= this (a number, or a date/time).")
    le: Bound | None = Field(None, description="Every value <= this (a number, or a date/time).")
    gt: Bound | None = Field(None, description="Every value > this (a number, or a date/time).")
    lt: Bound | None = Field(None, description="Every value < this (a number, or a date/time).")
    isin: list[Any] | None = Field(None, min_length=1, description="Allowed values.")
    nullable: bool = Field(False, description="Whether nulls/NaN are allowed.")
    unique: bool = Field(False, description="Whether values must be unique.")
    regex: str | None = Field(None, description="Every value matches this regex (from the start).")

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class InlineSchema(_Model):
    """Inline pandera checks, column by column."""

    columns: dict[str, ColumnCheck] = Field(description="Column name -> checks.")


def _schema_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "reference"
    if isinstance(value, (dict, InlineSchema)):
        return "inline"
    return None


SchemaField = Annotated[
    Union[
        Annotated[str, Tag("reference"), Field(pattern=_REF)],
        Annotated[InlineSchema, Tag("inline")],
    ],
    Discriminator(
        _schema_kind,
        custom_error_type="schema_type",
        custom_error_message='must be "package.module:DataFrameModelClass" or {columns: {...}}',
    ),
]
_UNION_TAGS = frozenset({"reference", "inline"})


# --------------------------------------------------------------------------------------- trainer
class ScalingSpec(_Model):
    """Workers and resources; xgboost/lightgbm and pytorch use different fields."""

    num_workers: int = Field(
        -1, ge=-1, description="xgboost/lightgbm: workers; -1 = one per node (one per GPU with GPUs)."
    )
    num_cpu_per_worker: int = Field(
        -1, ge=-1, description="xgboost/lightgbm: CPUs per worker; -1 = all the node's usable CPUs."
    )
    use_gpu: bool | None = Field(
        None, description="xgboost/lightgbm: train on GPUs; null = if the cluster has GPUs."
    )
    num_nodes: int = Field(1, ge=1, description="pytorch: number of nodes.")
    num_workers_per_node: int = Field(1, ge=1, description="pytorch: worker processes per node.")
    num_cpus: float = Field(1, ge=0, description="pytorch: CPUs per worker.")
    num_gpus: float = Field(0, ge=0, description="pytorch: GPUs per worker.")

    @field_validator("num_workers", "num_cpu_per_worker")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 is not allowed (accepted: -1 for automatic, or an integer >= 1)")
        return value


_GBM_SCALING = ("num_workers", "num_cpu_per_worker", "use_gpu")
_TORCH_SCALING = ("num_nodes", "num_workers_per_node", "num_cpus", "num_gpus")


class TrainerSpec(_Model):
    """Which trainer runs, with which objective, parameters and resources."""

    framework: FrameworkName = Field("xgboost", description="Training framework.",
                                     json_schema_extra=lambda schema: schema.update(enum=list(frameworks.names())))
    n_estimators: int = Field(100, ge=1, description="xgboost/lightgbm: boosting rounds.")
    objective: ObjectiveName | None = Field(
        None,
        json_schema_extra=lambda schema: schema.update(anyOf=[{"enum": list(_all_objectives()), "type": "string"},
                                                              {"type": "null"}]),
        description="Learning objective (sets the task). Default: reg:squarederror (xgboost), "
        "regression (lightgbm); for pytorch one of regression, binary, multiclass.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="xgboost/lightgbm native parameters; keys here win over n_estimators/objective.",
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="Workers and resources.")
    verbose_eval: int | None = Field(
        10, ge=1, description="Log eval metrics every this many rounds; null = never."
    )
    train_func: str | None = Field(
        None, pattern=_REF, description='pytorch only (required): "package.module:function".'
    )
    hyper_params: dict[str, str] = Field(
        default_factory=dict, description="pytorch only: hyper-parameters passed to train_func."
    )
    checkpoint_every: int | None = Field(
        DEFAULT_CHECKPOINT_EVERY, ge=1, description="xgboost/lightgbm: rounds between checkpoints a fit resumes from after "
        "losing a worker; null = only the final model (pytorch: train_func decides)."
    )
    max_restarts: int = Field(
        DEFAULT_MAX_RESTARTS, ge=0, description="Restarts of the workers from the latest checkpoint after losing one; "
        "then the run fails."
    )
    memory: Literal["auto", "in_memory", "low", "external"] = Field(
        "auto", description="How each worker holds its shard: in_memory (~2x the raw float32 shard at its peak), "
        "external (xgboost only: binned pages in a cache on node-local scratch disk, TRAINFLOW_SCRATCH), or auto: "
        "in memory when that fits a worker's memory, else external, else the run is refused before training."
    )

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_fits_framework(cls, value: Any, info: Any) -> Any:
        framework = info.data.get("framework")
        if value is None or framework not in frameworks.names() or not isinstance(value, str):
            return value
        accepted = frameworks.get(framework).objectives
        if value not in accepted:
            raise ValueError(
                f"{value!r} is not a {framework} objective (accepted: {_join(accepted)})"
            )
        return value

    @model_validator(mode="after")
    def _framework_fields(self) -> TrainerSpec:
        found: list[tuple[str, str]] = []
        torch = self.framework == "pytorch"
        if torch and self.train_func is None:
            found.append(("train_func", 'required for framework pytorch ("package.module:function")'))
        if not torch and self.train_func is not None:
            found.append(("train_func", "only for framework pytorch"))
        if not torch and self.hyper_params:
            found.append(("hyper_params", "only for framework pytorch (use params)"))
        if torch and self.params:
            found.append(("params", "only for xgboost/lightgbm (use hyper_params)"))
        plugin = frameworks.get(self.framework)
        objective = self.objective or plugin.default_objective
        for key in () if torch else _OBJECTIVE_KEYS:
            if key in self.params and self.params[key] != objective:
                found.append((f"params.{key}", "sets the objective, which decides the task the eval metrics "
                                               "read: set trainer.objective instead (accepted: "
                                               f"{_join(plugin.objectives)})"))
        # compared with the default, not "was it set": generated deployments list every key
        if torch and self.checkpoint_every != type(self).model_fields["checkpoint_every"].default:
            found.append(("checkpoint_every", "only for xgboost/lightgbm (a pytorch train_func checkpoints "
                                              "with context.report(..., checkpoint=state))"))
        if self.memory != "auto" and self.memory not in plugin.memory_modes:
            found.append(("memory", f"{self.memory!r} is not available for {self.framework} (accepted: "
                                    f"{_join(plugin.memory_modes)}); {frameworks_with(self.memory)}"))
        defaults = ScalingSpec()
        wrong = _GBM_SCALING if torch else _TORCH_SCALING
        for key in wrong:
            if getattr(self.scaling, key) != getattr(defaults, key):
                right = _join(_TORCH_SCALING if torch else _GBM_SCALING)
                found.append((f"scaling.{key}", f"not used by {self.framework} (accepted: {right})"))
        if found:
            raise _problems(*found)
        return self

    @property
    def resolved_objective(self) -> str:
        """The objective trained: `objective`, or the framework's default."""
        return self.objective or frameworks.get(self.framework).default_objective

    @property
    def task(self) -> Task:
        """regression | binary | multiclass, derived from the objective."""
        return frameworks.get(self.framework).task(self.resolved_objective)


# ------------------------------------------------------------------------ evaluate and register
class EvaluateSpec(_Model):
    """Metrics computed on the eval set."""

    metrics: list[Metric] | None = Field(
        None,
        min_length=1,
        description="Metrics; default by task: regression rmse, mae, r2; binary auc, logloss, "
        "accuracy; multiclass mlogloss, accuracy.",
    )


class PromoteOn(_Model):
    """The metric that decides whether a new version becomes `champion`."""

    metric: Metric = Field(description="One of evaluate.metrics.")
    mode: Literal["min", "max"] | None = Field(
        None, description="min = lower is better; default by metric (min for rmse, mae, logloss, mlogloss)."
    )
    min_delta: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="Promote only when the new version beats the champion by more than this, in the "
        "metric's units and the mode's direction (both scored on the same eval data); 0 = any improvement.",
    )
    if_champion_unscorable: Literal["keep", "promote"] = Field(
        "keep",
        description="When the champion cannot be scored on this run's eval data (its model does not "
        "load, its features are missing): keep it, or promote the new version.",
    )


class RegisterSpec(_Model):
    """MLflow registration and champion promotion."""

    model_name: str = Field(min_length=1, description="Registered model name in MLflow.")
    promote_on: PromoteOn | None = Field(
        None, description="Promotion metric; default: the first evaluate metric."
    )


class ScheduleSpec(_Model):
    """When deployments run the job: a cron expression or a fixed interval."""

    cron: str | None = Field(None, description='Cron expression, e.g. "0 2 * * *".')
    timezone: str = Field("UTC", description="IANA timezone for cron, e.g. Europe/Berlin.")
    interval_seconds: int | None = Field(None, ge=60, description="Run every this many seconds.")

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            got = "both" if self.cron is not None else "neither"
            raise _problems(("", f"give exactly one of cron or interval_seconds (got {got})"))
        found: list[tuple[str, str]] = []
        if self.cron is not None and len(self.cron.split()) not in (5, 6):
            found.append(("cron", f"{self.cron!r} is not a cron expression (5 fields, e.g. '0 2 * * *')"))
        try:
            if self.timezone != "UTC":  # UTC needs no tz database
                zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            found.append(("timezone", f"unknown timezone {self.timezone!r} (accepted: IANA names, e.g. UTC)"))
        if found:
            raise _problems(*found)
        return self


# ------------------------------------------------------------------------------------------ tune
class SamplerSpec(_Model):
    """One sampled parameter: exactly one of uniform/loguniform/randint ([low, high]) or choice."""

    uniform: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high]: a float.")
    loguniform: list[float] | None = Field(None, min_length=2, max_length=2,
                                           description="[low, high] (> 0): a float, uniform in log space.")
    randint: list[int] | None = Field(None, min_length=2, max_length=2,
                                      description="[low, high): an integer, high exclusive.")
    choice: list[Any] | None = Field(None, min_length=1, description="One of these values.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SamplerSpec:
        given = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise _problems(("", f"give exactly one of uniform, loguniform, randint, choice (got {_join(given) or 'none'})"))
        try:
            self.sampling()
        except ConfigError as exc:
            raise _problems((given[0], str(exc))) from None
        return self

    def sampling(self) -> Any:
        from trainflow import tune

        for kind in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, kind)
            if bounds is not None:
                return getattr(tune, kind)(*bounds)
        return tune.choice(self.choice)


SearchValue = SamplerSpec | list[Any] | float | int | str | bool


class HalvingSpec(_Model):
    """Successive halving: every trial trains `min_rounds`, the best 1/`reduction_factor` go on to
    `reduction_factor` times as many rounds, and so on up to n_estimators."""

    min_rounds: int = Field(10, ge=1, description="Boosting rounds every trial trains first.")
    reduction_factor: int = Field(3, ge=2, description="Keep the best 1/reduction_factor at each rung.")


class TuneSpec(_Model):
    """Hyper-parameter search inside the flow: the data is loaded, validated and binned once."""

    search_space: dict[str, SearchValue] = Field(
        min_length=1,
        description="n_estimators or params.<name> -> {uniform|loguniform|randint: [low, high]}, "
        "{choice: [...]}, a list (grid values) or a fixed value.",
    )
    num_trials: int = Field(8, ge=1, description="Configurations to try (grid: every point once).")
    metric: Metric | None = Field(None, description="Eval metric to optimise; default register.promote_on.metric.")
    mode: Literal["min", "max"] | None = Field(None, description="Default by metric (min for rmse, mae, logloss, mlogloss).")
    search_alg: Literal["random", "grid", "bayes"] = Field("random", description="random | grid | bayes (uniform only).")
    random_state: int | None = Field(None, description="Seed of the search (random, bayes).")
    halving: HalvingSpec | None = Field(None, description="Stop bad trials early (successive halving).")

    @field_validator("search_space")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if k != "n_estimators" and not (k.startswith("params.") and len(k) > 7)]
        if bad:
            raise ValueError(f"unknown key(s) {_join(bad)}: use n_estimators or params.<name>, e.g. params.max_depth")
        return value

    def space(self) -> dict[str, Any]:
        """The search space as trainflow.tune takes it."""
        return {k: (v.sampling() if isinstance(v, SamplerSpec) else v) for k, v in self.search_space.items()}

    def algorithm(self) -> Any:
        from trainflow.tune.search import BayesOpt, GridSearch, RandomSearch

        if self.search_alg == "grid":
            return GridSearch()
        if self.search_alg == "bayes":
            return BayesOpt(random_state=self.random_state)
        return RandomSearch(random_state=self.random_state)


# ------------------------------------------------------------------------------------------- job
# `register` is the contract's key; it shadows ABCMeta.register on the class only (instances are
# fine), so pydantic's shadowing warning is silenced for this one definition.
warnings.filterwarnings("ignore", message='Field name "register" in "JobSpec" shadows', category=UserWarning)


class JobSpec(_Model):
    """One training job: data, checks, features, trainer, evaluation, registration, schedule."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(
        pattern=_NAME,
        description="Job name (letters, digits, - _ .); also the MLflow experiment name.",
    )
    data: DataSpec = Field(description="Training and evaluation data.")
    schema_: SchemaField | None = Field(
        None,
        alias="schema",
        description='Pandera checks: {columns: {name: checks}} or "package.module:DataFrameModelClass".',
    )
    features: list[str] = Field(min_length=1, description="Feature columns, in model input order.")
    label: str = Field(min_length=1, description="Label column (not one of the features).")
    trainer: TrainerSpec = Field(default_factory=TrainerSpec, description="Trainer and resources.")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec, description="Evaluation metrics.")
    register: RegisterSpec = Field(description="MLflow registration and promotion.")
    tune: TuneSpec | None = Field(None, description="Hyper-parameter search before evaluate and register.")
    schedule: ScheduleSpec | None = Field(None, description="Schedule, read by deployments only.")

    @field_validator("features")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        dups = sorted({f for f in value if value.count(f) > 1})
        if dups:
            raise ValueError(f"duplicate features: {_join(dups)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        found: list[tuple[str, str]] = []
        if self.label in self.features:
            found.append(("label", f"{self.label!r} is also listed in features; remove it there"))
        task = self.task
        fitting = TASK_METRICS[task]
        metrics = self.resolved_metrics
        bad = [m for m in metrics if m not in fitting]
        if bad:
            found.append((
                "evaluate.metrics",
                f"{_join(bad)} {'does' if len(bad) == 1 else 'do'} not fit the {task} objective "
                f"{self.trainer.resolved_objective} (accepted: {_join(fitting)})",
            ))
        dups = sorted({m for m in metrics if metrics.count(m) > 1})
        if dups:
            found.append(("evaluate.metrics", f"duplicate metrics: {_join(dups)}"))
        promote = self.resolved_promotion
        if promote.metric not in metrics:
            found.append((
                "register.promote_on.metric",
                f"{promote.metric!r} is not in evaluate.metrics (accepted: {_join(metrics)})",
            ))
        natural = _natural_mode(promote.metric)
        if promote.mode != natural:
            found.append((
                "register.promote_on.mode",
                f"{promote.mode!r} would promote worse models: {promote.metric} is better when "
                f"{'lower' if natural == 'min' else 'higher'} (accepted: {natural})",
            ))
        found += self._tune_problems()
        if found:
            raise _problems(*found)
        return self

    def _tune_problems(self) -> list[tuple[str, str]]:
        tune = self.resolved_tune
        if tune is None:
            return []
        found = []
        natural = _natural_mode(tune.metric)
        if tune.mode != natural:
            found.append(("tune.mode", f"{tune.mode!r} would pick worse models: {tune.metric} is better when "
                                       f"{'lower' if natural == 'min' else 'higher'} (accepted: {natural})"))
        framework = frameworks.get(self.trainer.framework)
        scorable = framework.trial_metrics(self.trainer.resolved_objective)
        if not scorable:
            found.append(("tune", f"the {framework.name} trainer has no in-flow search; tune its train_func "
                                  "with trainflow.tune.Tuner instead"))
        elif tune.metric not in scorable:
            found.append(("tune.metric", f"{tune.metric!r} cannot score {framework.name} trials "
                                         f"(accepted: {_join(scorable)})"))
        if tune.halving is not None and "n_estimators" in tune.search_space:
            found.append(("tune.search_space.n_estimators", "halving decides the rounds of each trial: "
                                                            "set trainer.n_estimators and leave it out of the search"))
        elif tune.halving is not None and tune.halving.min_rounds >= self.trainer.n_estimators:
            found.append(("tune.halving.min_rounds", f"{tune.halving.min_rounds} leaves nothing to halve: "
                                                     f"use fewer than trainer.n_estimators ({self.trainer.n_estimators})"))
        return found

    # What the job uses where the spec leaves a choice to its defaults. The fields keep what the user
    # wrote (a generated deployment carries exactly that); these derive the rest each time.
    @property
    def resolved_metrics(self) -> list[str]:
        """evaluate.metrics, or the task's default metrics."""
        given = self.evaluate.metrics
        return list(given) if given is not None else list(DEFAULT_METRICS[self.task])

    @property
    def resolved_promotion(self) -> PromoteOn:
        """register.promote_on with its defaults: the first metric, in the metric's natural mode."""
        given = self.register.promote_on or PromoteOn(metric=self.resolved_metrics[0])
        return given.model_copy(update={"mode": given.mode or _natural_mode(given.metric)})

    @property
    def resolved_tune(self) -> TuneSpec | None:
        """`tune` with its defaults: the promotion metric, in its natural mode; None without `tune`."""
        tune = self.tune
        if tune is None:
            return None
        metric = tune.metric or self.resolved_promotion.metric
        return tune.model_copy(update={"metric": metric, "mode": tune.mode or _natural_mode(metric)})

    @property
    def task(self) -> Task:
        """regression | binary | multiclass, derived from the trainer's objective."""
        return self.trainer.task
