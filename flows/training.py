"""Deployment entrypoint `flows/training.py:training_pipeline`.

Prefect loads an entrypoint file by path (as a top-level module named after the file), which Ray
workers cannot import; the flow itself lives in `flows.pipeline`, an importable module.
"""
from flows.pipeline import TrainflowRayTaskRunner, training_pipeline

__all__ = ["TrainflowRayTaskRunner", "training_pipeline"]
