"""The whole pipeline without Prefect: for scripts, notebooks and tests."""
from __future__ import annotations

from collections.abc import Callable

from trainflow.pipeline.evaluate import evaluate
from trainflow.pipeline.fit import fit
from trainflow.pipeline.load import load
from trainflow.pipeline.plan import plan
from trainflow.pipeline.register import register
from trainflow.registry import RegisteredModel
from trainflow.spec import JobSpec, parse_spec


def run(spec: JobSpec | dict, progress: Callable[[str], None] | None = None) -> RegisteredModel:
    """load → plan → fit → evaluate → register, in this process; raises a TrainflowError on bad input."""
    spec = parse_spec(spec)
    data = load(spec)
    try:
        outcome = fit(spec, data, plan(spec, data), progress=progress)
        metrics = evaluate(spec, outcome, data)
        return register(spec, outcome, metrics, data)
    finally:
        data.release()  # the run's snapshot goes with the run
