"""The whole pipeline without Prefect: for scripts, notebooks and tests."""
from __future__ import annotations

from collections.abc import Callable

from trainflow.pipeline.evaluate import evaluate
from trainflow.pipeline.fit import fit
from trainflow.pipeline.load import load
from trainflow.pipeline.plan import plan
from trainflow.pipeline.register import register
from trainflow.pipeline.tune import tune
from trainflow.registry import RegisteredModel
from trainflow.spec import JobSpec, parse_spec


def run(spec: JobSpec | dict, progress: Callable[[str], None] | None = None) -> RegisteredModel:
    """load → plan → fit (or tune) → evaluate → register, in this process; raises a TrainflowError on bad input."""
    spec = parse_spec(spec)
    data = load(spec)
    try:
        decided = plan(spec, data)
        tuned = tune(spec, data, decided, progress=progress) if spec.tune is not None else None
        outcome = tuned.best if tuned is not None else fit(spec, data, decided, progress=progress)
        metrics = evaluate(spec, outcome, data)
        return register(spec, outcome, metrics, data, tuned)
    finally:
        data.release()  # the run's snapshot goes with the run
