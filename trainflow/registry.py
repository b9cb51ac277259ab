"""MLflow logging, registration and alias promotion (the pipeline's `register` step).

One call = one MLflow run + one model version. Aliases, not stages: `challenger` always lands on the
new version, `champion` only when the promotion rule says it beats the current champion. The pipeline
scores the champion on the candidate's own eval data (`ChampionScore`), and the alias moves only if
the version it scored is still `champion` under the promotion lock. A failed call leaves no version
behind with an alias (the version is deleted and the run marked FAILED).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import mlflow
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from trainflow import frameworks
from trainflow.defaults import default_tracking_uri, sqlite_folder
from trainflow.errors import ConfigError, RegistryError
from trainflow.frameworks import Framework
from trainflow.lineage.record import RunLineage
from trainflow.lineage.store import log_lineage, version_tags
from trainflow.secrets import flatten_masked, mask_text

CHAMPION, CHALLENGER = "champion", "challenger"
FEATURES_TAG, FEATURES_FILE = "trainflow.features", "features.json"
_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else trainflow's default (a SQLite file in the working dir)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


@dataclass(frozen=True)
class PromotionRule:
    """Which metric decides `champion`, whether lower or higher is better, by how much the new version
    must win (`min_delta`, in the metric's units), and what to do when the champion cannot be scored."""

    metric: str
    mode: Literal["min", "max"]
    min_delta: float = 0.0
    if_champion_unscorable: Literal["keep", "promote"] = "keep"

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError(f"PromotionRule.mode must be 'min' or 'max', got {self.mode!r}")
        if not isinstance(self.min_delta, (int, float)) or not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ConfigError(f"PromotionRule.min_delta must be a finite number >= 0, got {self.min_delta!r}")
        if self.if_champion_unscorable not in ("keep", "promote"):
            raise ConfigError("PromotionRule.if_champion_unscorable must be 'keep' or 'promote', got "
                              f"{self.if_champion_unscorable!r}")

    def beats(self, candidate: float, champion: float | None) -> bool:
        """Improvement by more than `min_delta`; a missing/NaN champion score always loses, NaN never wins."""
        if candidate is None or math.isnan(candidate):
            return False
        if champion is None or math.isnan(champion):
            return True
        gain = champion - candidate if self.mode == "min" else candidate - champion
        return gain > self.min_delta


@dataclass(frozen=True)
class ChampionScore:
    """The champion as the evaluate step found it, scored on the candidate's eval data in the same pass.

    `version` None: there was no champion then. `metrics` None: it could not be scored, `unscorable`
    says why (its model does not load, its features are not in the eval data, ...).
    """

    version: str | None
    metrics: dict[str, float] | None = None
    unscorable: str = ""
    framework: str = ""


@dataclass(frozen=True)
class ChampionRecord:
    """The current champion version as the registry holds it (what the evaluate step will score)."""

    name: str
    version: str
    run_id: str
    framework: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """The version's own URI: later alias moves do not change what it points at."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RegisteredModel:
    """What the register step produced; `to_dict()` is what the CLI prints with `--json`."""

    name: str
    version: str
    run_id: str
    uri: str
    aliases: list[str]
    metrics: dict[str, float]
    promoted: bool
    champion_version: str  # "" while no version is champion (a NaN score never becomes one)
    decision: str = ""  # why champion moved or stayed, in words
    # the champion evaluate scored on this run's eval data: {"version", "metrics"} or {"version", "unscorable"}
    compared: dict[str, Any] = field(default_factory=dict)
    experiment_id: str = ""
    artifact_uri: str = ""  # the run's artifacts (plots/, spec.yaml, lineage.json)

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "champion_uri": self.champion_uri}


def mlflow_ui_url() -> str:
    """Where people open the MLflow UI: TRAINFLOW_MLFLOW_UI_URL, else an http(s) tracking URI, else ""
    (a local SQLite store has no UI until `mlflow ui` serves it)."""
    ui = os.environ.get("TRAINFLOW_MLFLOW_UI_URL") or ""
    if not ui and tracking_uri().startswith(("http://", "https://")):
        ui = tracking_uri()
    return ui.rstrip("/")


def mlflow_links(model: RegisteredModel) -> list[str]:
    """Markdown lines linking a registered version, its run and its plots in the MLflow UI (or, for a
    local store, the command that opens the UI and the plot files)."""
    plots = ("plots/learning_curve.png", "plots/feature_importance.png")
    version_page = f"#/models/{model.name}/versions/{model.version}"
    run_page = f"#/experiments/{model.experiment_id}/runs/{model.run_id}"
    ui = mlflow_ui_url()
    if ui:
        return [f"- MLflow: [model version {model.version}]({ui}/{version_page}) · [run]({ui}/{run_page})",
                *[f"- plot: [{p.split('/')[1]}]({ui}/get-artifact?path={p}&run_uuid={model.run_id})" for p in plots]]
    local = model.artifact_uri.removeprefix("file://")
    found = [p for p in plots if local and os.path.exists(os.path.join(local, p))]
    serve = (f"- MLflow UI: run `mlflow ui --backend-store-uri {mask_text(tracking_uri())} --host 127.0.0.1`, "
             f"then open http://127.0.0.1:5000/{version_page} (set TRAINFLOW_MLFLOW_UI_URL to link a served UI)")
    return [serve, *[f"- plot: `{os.path.join(local, p)}`" for p in found]]


@contextmanager
def _pinned_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API needs a global URI, and `mlflow.set_tracking_uri` also writes
    MLFLOW_TRACKING_URI into os.environ: restore both, so one call's default never leaks into
    the next call or into the caller's process."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets both the global and the env var


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar while downloading: on the console a run's output is its log lines (the
    demo printed 'Downloading artifacts: 14%|█▍ ...' when it loaded the champion)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _metric_key(key: str) -> str:
    return _BAD_METRIC_CHARS.sub("_", key)


def _importance_figure(importance: dict[str, float]) -> Figure:
    top = sorted(importance.items(), key=lambda kv: kv[1])[-30:]
    fig = Figure(figsize=(7, 0.3 * len(top) + 1.5))
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no GUI backend, nothing global to close
    ax = fig.add_subplot()
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_title("Feature importance")
    fig.tight_layout()
    return fig


def _learning_curve_figure(history: dict[str, dict[str, list[float]]]) -> Figure:
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for split, curves in history.items():
        for metric, values in curves.items():
            ax.plot(range(len(values)), values, label=f"{split}-{metric}")
    ax.set_xlabel("round")
    ax.set_title("Learning curve")
    ax.legend()
    fig.tight_layout()
    return fig


@contextmanager
def _machine_lock(*key_parts: str) -> Iterator[None]:
    """An exclusive lock shared by every process on this machine for the same key."""
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"trainflow-{key}.lock")
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _promotion_lock(uri: str, model_name: str):
    """Serialise read-compare-move of the aliases among processes on this machine.

    MLflow has no compare-and-set for aliases; runs on one machine (a served deployment, parallel
    CLI runs) take this lock. Across machines the re-read right before the move narrows the window.
    """
    return _machine_lock("promote", uri, model_name)


def _client(uri: str) -> MlflowClient:
    """A client whose SQLite store was created/migrated under a lock: two first runs at once would
    otherwise race the schema migration and one would fail."""
    if not uri.startswith("sqlite:"):
        return MlflowClient(tracking_uri=uri)
    with _machine_lock("store", uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def _alias_version(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The version holding `alias`, None if nobody does. Other errors propagate: reading "no
    champion" from a flaky store would promote any model."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise


_FIXES = {
    "starting the run": "check that the tracking store {uri} is reachable and writable "
                        "(set MLFLOW_TRACKING_URI to change it)",
    "logging params, metrics and plots": "pass params as a dict, metrics as name -> number and "
                                         "eval_history as {{split: {{metric: [values]}}}}",
    "logging the model": "pass a trained {framework} model whose predict accepts input_example's "
                         "feature columns",
    "registering the model version": "check that the model registry at {uri} is reachable and "
                                     "that '{name}' is a valid model name",
    "moving the aliases": "rerun the registration; the new version was deleted and its run marked "
                          "FAILED, so no alias points at it",
}


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created when it does not exist yet."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: for a SQLite store, `mlruns` next to the database
    file. MLflow's own default is `./mlruns` in the working folder of whichever process creates the
    experiment, which is a temporary folder under `ray job submit` (deleted with the job) or simply
    another project's folder. A tracking server decides for itself (None)."""
    folder = sqlite_folder(uri)
    return os.path.join(folder, "mlruns") if folder else None


def _log_metrics(client: MlflowClient, run_id: str, batch: list[Metric]) -> None:
    for i in range(0, len(batch), 1000):  # MLflow's per-request limit
        client.log_batch(run_id, metrics=batch[i:i + 1000])


@contextmanager
def tuning_run(experiment: str, params: dict[str, Any], tags: dict[str, str],
               trials: list[dict[str, Any]], curves: dict[str, list[float]], metric: str) -> Iterator[str]:
    """The parent run of a search: its params, the trials table, metric vs trial; `register_model`
    and `log_trial` inside the block make nested runs under it. Yields the parent's run id."""
    uri = tracking_uri()
    with _pinned_uri(uri):
        try:
            client = _client(uri)
            run = mlflow.start_run(experiment_id=experiment_id(client, experiment), run_name=f"{experiment}-tuning")
            mlflow.set_tags({**tags, "trainflow.kind": "tuning"})
            mlflow.log_params(flatten_masked(params))
            mlflow.log_table(pd.DataFrame(trials), "trials.json")
            mlflow.log_figure(_trials_figure(curves, metric), "plots/trials.png")
        except Exception as exc:
            if mlflow.active_run() is not None:
                mlflow.end_run("FAILED")
            raise RegistryError(f"logging the tuning run of '{experiment}' failed: {type(exc).__name__}: "
                                f"{_first_line(exc)}. Fix: check the MLflow store at {mask_text(uri)}.",
                                transient=_is_transient(exc)) from exc
        try:
            yield run.info.run_id
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")


def log_trial(trial_id: str, params: dict[str, Any], metrics: dict[str, float], curve: list[float],
              metric: str, tags: dict[str, str]) -> str:
    """One nested run under the active tuning run: a trial's params, final metrics and curve."""
    try:
        parent = mlflow.active_run()
        with mlflow.start_run(run_name=trial_id, nested=True, experiment_id=parent.info.experiment_id) as run:
            mlflow.set_tags({**tags, "trainflow.trial": trial_id})
            mlflow.log_params(flatten_masked(params))
            batch = [Metric(_metric_key(k), float(v), 0, 0) for k, v in metrics.items() if math.isfinite(v)]
            batch += [Metric(_metric_key(f"eval-{metric}"), float(v), 0, i) for i, v in enumerate(curve)]
            _log_metrics(MlflowClient(), run.info.run_id, batch)
            return run.info.run_id
    except Exception as exc:
        raise RegistryError(f"logging trial {trial_id} failed: {type(exc).__name__}: {_first_line(exc)}",
                            transient=_is_transient(exc)) from exc


def _trials_figure(curves: dict[str, list[float]], metric: str) -> Figure:
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    finals = [(name, c[-1]) for name, c in curves.items() if c]
    left.plot(range(len(finals)), [v for _, v in finals], "o")
    left.set_xlabel("trial")
    left.set_ylabel(f"eval {metric}")
    left.set_title(f"{metric} by trial")
    for name, curve in curves.items():
        right.plot(range(1, len(curve) + 1), curve, linewidth=0.8)
    right.set_xlabel("round")
    right.set_title(f"eval {metric} per round")
    fig.tight_layout()
    return fig


def register_model(
    *,
    experiment: str,
    model_name: str,
    framework: str | Framework,
    model: Any,
    input_example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    eval_history: dict[str, dict[str, list[float]]] | None,
    feature_names: list[str],
    feature_importance: dict[str, float] | None,
    rule: PromotionRule,
    tags: dict[str, Any] | None = None,
    champion: ChampionScore | None = None,
    lineage: RunLineage | None = None,
) -> RegisteredModel:
    """Log one run, register one version, set `challenger`, and move `champion` if it wins.

    `champion` is the champion as scored on this model's eval data (what the pipeline passes): it is
    logged (`champion_<metric>` metrics, `trainflow.champion_version` tag) and `champion` moves only if
    that version still holds the alias and loses by the rule. Without it the champion's stored metric
    is compared, which is fair only when both runs used the same eval data.

    `lineage` (the pipeline passes it) is written on the run (spec, data inputs, code, flow run) and on
    the version (tags and a description for its MLflow page).

    All-or-nothing: on any failure the run ends FAILED, a version created by this call is deleted
    (taking its aliases with it) and RegistryError names the step and the fix.
    """
    if not isinstance(framework, Framework):
        try:
            framework = frameworks.get(framework)
        except ConfigError as exc:
            raise RegistryError(str(exc)) from None
    if rule.metric not in metrics:
        raise RegistryError(f"promotion metric '{rule.metric}' is not among the metrics "
                            f"{sorted(metrics)}; evaluate it or change register.promote_on.metric")
    missing = [c for c in feature_names if c not in input_example.columns]
    if missing:
        raise RegistryError(f"input_example lacks feature columns {missing}; pass rows of the "
                            f"training features {feature_names}")
    if len(input_example) < framework.min_example_rows:
        raise RegistryError(f"a {framework.name} input_example needs at least {framework.min_example_rows} rows "
                            "(fewer would fix the logged model's batch size)")
    example = input_example[feature_names].head(5)
    candidate = float(metrics[rule.metric])

    uri = tracking_uri()
    step, run_id, version, moved = "starting the run", None, None, {}
    client = None  # the rollback only touches the store once a run exists
    with _pinned_uri(uri):
        try:
            client = _client(uri)
            run = mlflow.start_run(experiment_id=experiment_id(client, experiment),
                                   nested=mlflow.active_run() is not None)
            run_id = run.info.run_id

            step = "logging params, metrics and plots"
            # The features let a later run score this version as champion; a list too long for a tag
            # (MLflow keeps 8000 characters) goes to an artifact instead.
            listed = json.dumps(list(feature_names))
            mlflow.set_tags({"trainflow.framework": framework.name, "trainflow.model_name": model_name,
                             **({FEATURES_TAG: listed} if len(listed) <= 5000 else {}),
                             **_champion_tags(champion), **(tags or {})})
            if len(listed) > 5000:
                mlflow.log_dict(list(feature_names), FEATURES_FILE)
            mlflow.log_params(flatten_masked(params))
            if lineage is not None:
                log_lineage(lineage, experiment)
            batch = [Metric(_metric_key(k), float(v), 0, 0) for k, v in metrics.items()]
            if champion is not None and champion.metrics:
                batch += [Metric(_metric_key(f"champion_{k}"), float(v), 0, 0) for k, v in champion.metrics.items()]
            for split, curves in (eval_history or {}).items():
                for metric, values in curves.items():
                    batch += [Metric(_metric_key(f"{split}-{metric}"), float(v), 0, i)
                              for i, v in enumerate(values)]
            _log_metrics(client, run_id, batch)
            if eval_history:
                mlflow.log_dict(eval_history, "eval_history.json")
                mlflow.log_figure(_learning_curve_figure(eval_history), "plots/learning_curve.png")
            importance = dict(feature_importance) if feature_importance is not None else framework.importance(model)
            if importance:
                mlflow.log_dict(importance, "feature_importance.json")
                mlflow.log_figure(_importance_figure(importance), "plots/feature_importance.png")

            step = "logging the model"
            info = framework.log_model(model, example)

            step = "registering the model version"
            described = lineage is not None
            version = mlflow.register_model(
                info.model_uri, model_name,
                tags=version_tags(lineage, experiment, metrics) if described else None).version
            if described:
                client.update_model_version(model_name, version, lineage.description(experiment, metrics))

            step = "moving the aliases"
            with _promotion_lock(uri, model_name):
                moved[CHALLENGER] = _alias_version(client, model_name, CHALLENGER)
                client.set_registered_model_alias(model_name, CHALLENGER, version)
                # Read the champion right before moving the alias, so a concurrent registration
                # that already won cannot be overwritten by a model never compared with it.
                current = _alias_version(client, model_name, CHAMPION)
                if champion is None:
                    best = current and client.get_run(current.run_id).data.metrics.get(rule.metric)
                    promoted = rule.beats(candidate, best)
                    decision = _stored_decision(rule, candidate, current, best, promoted)
                else:
                    promoted, decision = decide(rule, candidate, champion,
                                                str(current.version) if current else None)
                if promoted:
                    moved[CHAMPION] = current
                    client.set_registered_model_alias(model_name, CHAMPION, version)
            mlflow.set_tag("trainflow.promotion", decision[:5000])
            mlflow.end_run("FINISHED")
        except BaseException as exc:  # Ctrl-C too: never leave an aliased half-registration
            clean = _rollback(client, model_name, run_id, version, moved)
            if not isinstance(exc, Exception):
                raise
            # Retrying is safe only when this attempt left nothing behind (an alias the store moved
            # before the error reached us could otherwise stay on a version that is then deleted).
            transient = clean and _is_transient(exc)
            fix = (_TRANSIENT_FIX if transient else _FIXES[step]).format(uri=mask_text(uri),
                                                                         framework=framework.name, name=model_name)
            if not clean:
                fix += (f" (cleanup failed too: the versions of run {run_id} of '{model_name}' carry "
                        "no alias; delete them by hand)")
            raise RegistryError(f"registering model '{model_name}' failed while {step}: "
                                f"{type(exc).__name__}: {_first_line(exc)}. Fix: {fix}.",
                                transient=transient) from exc
    return RegisteredModel(
        name=model_name, version=str(version), run_id=run_id, uri=f"models:/{model_name}/{version}",
        aliases=[CHALLENGER, CHAMPION] if promoted else [CHALLENGER],
        metrics={k: float(v) for k, v in metrics.items()}, promoted=promoted,
        champion_version=str(version if promoted else (current.version if current else "")),
        decision=decision, compared=_compared(champion), experiment_id=run.info.experiment_id,
        artifact_uri=run.info.artifact_uri,
    )


def decide(rule: PromotionRule, candidate: float, champion: ChampionScore,
           current: str | None) -> tuple[bool, str]:
    """Whether the new version becomes champion, and why, given the champion evaluate scored on the
    same eval data and the version holding `champion` now (read under the promotion lock)."""
    m = rule.metric
    was = f"version {champion.version}" if champion.version else "no champion"
    if current != champion.version:
        now = f"version {current}" if current else "no champion"
        return False, (f"not promoted: evaluate compared against {was}, but another run changed it to {now} "
                       "before this registration; the new version was never compared with the current "
                       "champion (rerun to compare)")
    if candidate is None or math.isnan(candidate):
        return False, f"not promoted: {m} is NaN"
    if champion.version is None:
        return True, f"promoted: no champion yet ({m}={candidate:.6g})"
    if champion.metrics is None:
        if rule.if_champion_unscorable == "promote":
            return True, (f"promoted: champion version {champion.version} could not be scored on this eval data "
                          f"({champion.unscorable}); if_champion_unscorable=promote")
        return False, (f"not promoted: champion version {champion.version} could not be scored on this eval "
                       f"data ({champion.unscorable}); if_champion_unscorable=keep (set "
                       "register.promote_on.if_champion_unscorable: promote to replace it)")
    best = champion.metrics.get(m)
    versus = (f"{m} {candidate:.6g} vs champion version {champion.version}'s "
              f"{best if best is None else format(best, '.6g')} on the same eval data")
    if rule.beats(candidate, best):
        return True, f"promoted: {versus}"
    margin = f" by more than min_delta={rule.min_delta:g}" if rule.min_delta else ""
    return False, f"not promoted: {versus} (not better{margin}, mode {rule.mode})"


def _stored_decision(rule: PromotionRule, candidate: float, current: Any, best: float | None,
                     promoted: bool) -> str:
    if current is None:
        return f"promoted: no champion yet ({rule.metric}={candidate:.6g})" if promoted else \
            f"not promoted: {rule.metric} is NaN"
    return (f"{'promoted' if promoted else 'not promoted'}: {rule.metric} {candidate:.6g} vs champion version "
            f"{current.version}'s stored {best} (from its own run's eval data)")


def _champion_tags(champion: ChampionScore | None) -> dict[str, str]:
    if champion is None:
        return {}
    tags = {"trainflow.champion_version": champion.version or "none"}
    if champion.version and champion.metrics is None:
        tags["trainflow.champion_unscorable"] = champion.unscorable[:5000]
    return tags


def _compared(champion: ChampionScore | None) -> dict[str, Any]:
    if champion is None or champion.version is None:
        return {}
    if champion.metrics is None:
        return {"version": champion.version, "unscorable": champion.unscorable}
    return {"version": champion.version, "metrics": {k: float(v) for k, v in champion.metrics.items()}}


_TRANSIENT_FIX = ("the tracking store {uri} was busy or unreachable; nothing was registered, and the "
                  "pipeline retries this step (if it keeps failing, check the store and rerun)")
_TRANSIENT_WORDS = ("database is locked", "database is busy", "temporarily unavailable", "connection reset",
                    "connection refused", "connection aborted", "timed out", "read timeout", "connect timeout",
                    "max retries exceeded", "failed to establish a new connection")


def _is_transient(exc: BaseException) -> bool:
    """A cause that may go away by itself: network errors, timeouts, a locked SQLite store.

    MLflow wraps SQLAlchemy and HTTP errors in MlflowException, so the whole cause chain is read.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        if isinstance(cause, MlflowException) and cause.error_code in ("TEMPORARILY_UNAVAILABLE",
                                                                       "REQUEST_LIMIT_EXCEEDED"):
            return True
        if (isinstance(cause, MlflowException) or type(cause).__name__ == "OperationalError"
                or type(cause).__module__.startswith(("requests", "urllib3"))):
            if any(w in str(cause).lower() for w in _TRANSIENT_WORDS):
                return True
        cause = cause.__cause__ or cause.__context__
    return False


def _first_line(exc: BaseException) -> str:
    """The first line of an error, capped: SQLAlchemy appends the whole SQL statement."""
    text = mask_text(str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= 300 else text[:297] + "..."


def _rollback(client: MlflowClient, name: str, run_id: str | None, version: str | None,
              moved: dict[str, Any]) -> bool:
    """Best effort: delete this run's versions, hand moved aliases back, end the run FAILED.
    Returns False when the cleanup itself failed (the store is likely unreachable)."""
    clean = True
    try:
        if run_id:
            stale = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            for v in {str(x.version) for x in stale} | ({str(version)} if version else set()):
                client.delete_model_version(name, v)
            for alias, previous in moved.items():
                if previous is not None and _alias_version(client, name, alias) is None:
                    client.set_registered_model_alias(name, alias, previous.version)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        clean = False
    active = mlflow.active_run()
    try:
        if run_id and active is not None and active.info.run_id == run_id:
            mlflow.end_run("FAILED")
        elif run_id:
            client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001
        clean = False
    return clean


def get_champion(model_name: str) -> tuple[str, dict[str, float]] | None:
    """The champion's version and its run's metrics, or None when there is no champion yet."""
    try:
        client = _client(tracking_uri())
        current = _alias_version(client, model_name, CHAMPION)
        if current is None:
            return None
        return str(current.version), dict(client.get_run(current.run_id).data.metrics)
    except MlflowException as exc:
        raise RegistryError(f"cannot read the champion of model '{model_name}': {_first_line(exc)}. Fix: "
                            f"check that the tracking store {mask_text(tracking_uri())} is reachable") from exc


def champion_record(model_name: str) -> ChampionRecord | None:
    """The version holding `champion` now, with its run's tags (framework, features), or None."""
    uri = tracking_uri()
    try:
        client = _client(uri)
        current = _alias_version(client, model_name, CHAMPION)
        if current is None:
            return None
        tags = dict(client.get_run(current.run_id).data.tags) if current.run_id else {}
    except MlflowException as exc:
        raise RegistryError(f"cannot read the champion of model '{model_name}': {_first_line(exc)}. Fix: "
                            f"check that the tracking store {mask_text(uri)} is reachable") from exc
    return ChampionRecord(model_name, str(current.version), current.run_id or "",
                          tags.get("trainflow.framework", ""), tags)


def model_version(uri: str, store: str | None = None) -> tuple[MlflowClient, Any]:
    """(client, model version) behind `models:/name/N` or `models:/name@alias` (an alias resolved now,
    once). A URI that is not one, or names no version, is a ConfigError naming the fix; an unreachable
    store a RegistryError."""
    import re

    from trainflow.spec.base import MODEL_URI

    match = re.match(MODEL_URI, uri.strip())
    if not match:
        raise ConfigError(f"{uri!r} is not a model version URI: write models:/NAME/VERSION or models:/NAME@ALIAS "
                          "(e.g. models:/credit-risk@champion).")
    name, tail = uri.strip().removeprefix("models:/").removesuffix(match.group(1)), match.group(1)
    version, alias = (tail[1:], "") if tail.startswith("/") else ("", tail[1:])
    store = store or tracking_uri()
    try:
        client = _client(store)
        mv = client.get_model_version(name, version) if version else _alias_version(client, name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"No model version {uri} in the registry at {mask_text(store)}: {_first_line(exc)}. "
                              "Check the name and version (MLflow UI), or MLFLOW_TRACKING_URI.") from None
        raise RegistryError(f"cannot read {uri}: {_first_line(exc)}. Fix: check that the tracking store "
                            f"{mask_text(store)} is reachable", transient=_is_transient(exc)) from exc
    if mv is None:
        raise ConfigError(f"No version of model '{name}' holds the alias '{alias}' in the registry at "
                          f"{mask_text(store)}. Register one, or name a version (models:/NAME/N).")
    return client, mv


def version_record(uri: str) -> ChampionRecord:
    """The version behind a model version URI (see model_version), with its run's tags."""
    client, mv = model_version(uri)
    try:
        tags = dict(client.get_run(mv.run_id).data.tags) if mv.run_id else {}
    except MlflowException as exc:
        raise RegistryError(f"cannot read the run of {uri}: {_first_line(exc)}",
                            transient=_is_transient(exc)) from exc
    return ChampionRecord(mv.name, str(mv.version), mv.run_id or "", tags.get("trainflow.framework", ""), tags)


def download_model(model_uri: str, dst: str) -> str:
    """The MLflow model folder of `model_uri` downloaded under `dst`; its local path."""
    with _pinned_uri(tracking_uri()), quiet_downloads():
        return mlflow.artifacts.download_artifacts(model_uri, dst_path=dst)


def recorded_features(record: ChampionRecord, dst: str) -> list[str] | None:
    """The feature columns the version's run recorded (tag, or artifact for long lists), None if none."""
    if FEATURES_TAG in record.tags:
        return list(json.loads(record.tags[FEATURES_TAG]))
    with _pinned_uri(tracking_uri()), quiet_downloads():
        try:
            path = mlflow.artifacts.download_artifacts(run_id=record.run_id, artifact_path=FEATURES_FILE, dst_path=dst)
        except (MlflowException, OSError):
            return None
    with open(path) as fh:
        return list(json.load(fh))


def load_champion(model_name: str) -> mlflow.pyfunc.PyFuncModel:
    """`models:/<name>@champion` as a pyfunc model, whatever flavour it was logged in."""
    with _pinned_uri(tracking_uri()):
        try:
            return mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
        except MlflowException as exc:
            raise RegistryError(f"cannot load the champion of model '{model_name}': {_first_line(exc)}. Fix: "
                                "register a model first, or check MLFLOW_TRACKING_URI") from exc
