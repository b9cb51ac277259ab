"""A trainflow error raised in a worker reaches the caller as it was raised, fields included."""
from __future__ import annotations

from trainflow.distributors.boosting import _translate_worker_failure
from trainflow.errors import RegistryError, SchemaValidationError, TrainingError


class _WorkerFailure(Exception):
    """What Ray Train hands over per rank: an error whose `cause` is the worker's own exception."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def test_a_workers_trainflow_error_keeps_its_fields():
    report = [{"column": "age", "check": "ge(18)", "failure_count": 3, "examples": [1, 2, 3]}]
    error = _translate_worker_failure({1: _WorkerFailure(SchemaValidationError("bad rows", report)),
                                       2: _WorkerFailure(ValueError("later rank"))})
    assert isinstance(error, SchemaValidationError) and str(error) == "bad rows" and error.report == report

    transient = _translate_worker_failure({0: RegistryError("store busy", transient=True)})
    assert isinstance(transient, RegistryError) and transient.transient


def test_a_foreign_worker_error_becomes_a_training_error_naming_the_rank():
    error = _translate_worker_failure({3: _WorkerFailure(ValueError("[12:00:00] /src/x.cc:9: Check failed: y"))})
    assert isinstance(error, TrainingError)
    assert "worker rank 3: ValueError: Check failed: y" in str(error)
