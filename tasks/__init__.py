"""Prefect tasks of the training pipeline: thin wrappers over trainflow.pipeline."""
from tasks.evaluate import evaluate
from tasks.fit import fit
from tasks.load import load
from tasks.register import register
from tasks.plan import plan
from tasks.tune import tune

__all__ = ["load", "plan", "fit", "evaluate", "register", "tune"]
