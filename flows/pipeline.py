"""The `training-pipeline` flow: spec → load → plan → fit (or tune) → evaluate → register."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from flows.console import show_errors_as_messages_if_asked
from tasks.fit import fit
from tasks.load import load
from tasks.plan import plan
from tasks.tune import tune
from trainflow.cluster import ensure_cluster
from trainflow.distributors.progress import ProgressChannel
from trainflow.lineage.record import Reproduction
from trainflow.spec import JobSpec, parse_spec

show_errors_as_messages_if_asked()  # flow runs started by `trainflow serve`: messages, not stacks


class TrainflowRayTaskRunner(RayTaskRunner):
    """RayTaskRunner on trainflow's cluster: RAY_ADDRESS when set, else the embedded loopback Ray."""

    def __enter__(self):
        ensure_cluster(check=False)  # the flow body runs the preflight: a refusal fails the run
        return super().__enter__()


# Parameters are validated by parse_spec in the body rather than by Prefect, so a bad value from the
# UI fails the run with trainflow's spec error (key path + accepted values), not a raw pydantic dump.
@flow(name="training-pipeline", task_runner=TrainflowRayTaskRunner(), persist_result=True,
      log_prints=True, validate_parameters=False)
def training_pipeline(spec: JobSpec, reproduce: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluate and register one model as the spec describes; returns the registered version.

    `reproduce` ({version, data}: what `trainflow reproduce` passes) makes the run refuse data whose
    values differ from the data that version was trained on."""
    # Here, not at the top: a Ray worker that runs the fit task unpickles this module with the task's
    # context, and evaluate/register bring MLflow, the registry and matplotlib (~2.7 s of imports).
    from tasks.evaluate import evaluate
    from tasks.register import register

    spec = parse_spec(spec, source="flow parameter 'spec'")
    ensure_cluster()  # on an existing cluster: the preflight, before any worker starts
    target = Reproduction.from_dict(reproduce) if reproduce else None
    logger = get_run_logger()
    data = load(spec, target)
    logger.info("Loaded %d training rows and %d eval rows (%s); schema checks passed.",
                data.train_rows, data.eval_rows, data.eval_source)
    decided = plan(spec, data)
    step = "tune" if spec.tune is not None else "fit"
    channel = ProgressChannel() if spec.trainer.verbose_eval or spec.tune is not None else None
    drain = channel.drain_to(lambda line: logger.info("%s %s", step, line)) if channel else None
    tuned = None
    try:
        with remote_options(num_cpus=0, num_gpus=0):  # the workers take the resources, not this task
            if spec.tune is not None:
                tuned = tune.submit(spec, data, decided, channel).result()
                outcome = tuned.best
            else:
                outcome = fit.submit(spec, data, decided, channel).result()
    finally:
        if drain is not None:
            drain.stop()
            channel.close()
    logger.info("%s took %.1fs on %s%s", "Tuning" if tuned else "Fit", outcome.seconds, decided.summary(),
                f"; worker memory: {outcome.memory}" if outcome.memory else "")
    evaluation = evaluate(spec, outcome, data)
    logger.info("Eval metrics: %s", ", ".join(f"{k}={v:.6g}" for k, v in evaluation.items()))
    if evaluation.champion.metrics is not None:
        logger.info("Champion version %s on the same eval data: %s", evaluation.champion.version,
                    ", ".join(f"{k}={v:.6g}" for k, v in evaluation.champion.metrics.items()))
    model = register(spec, outcome, evaluation, data, tuned, target.version if target else "")
    logger.info("Registered %s (aliases: %s); champion is version %s; %s",
                model.uri, ", ".join(model.aliases), model.champion_version, model.decision)
    return model.to_dict()
