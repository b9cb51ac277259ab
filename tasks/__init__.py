"""Prefect tasks of the training pipeline: thin wrappers over trainflow.pipeline, one module each.

Nothing is imported here: a Ray worker that runs the fit task imports `tasks.fit` only, not MLflow
and the registry that evaluate/register need (1.6 s of imports on every cold worker)."""
