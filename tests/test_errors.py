"""A trainflow error raised in a worker reaches the caller as it was raised, fields included."""
from __future__ import annotations

from trainflow.distributors.runner import translate_worker_failure
from trainflow.errors import RegistryError, SchemaValidationError, TrainingError


class _WorkerFailure(Exception):
    """What Ray Train hands over per rank: an error whose `cause` is the worker's own exception."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def test_a_workers_trainflow_error_keeps_its_fields():
    report = [{"column": "age", "check": "ge(18)", "failure_count": 3, "examples": [1, 2, 3]}]
    error = translate_worker_failure({1: _WorkerFailure(SchemaValidationError("bad rows", report)),
                                       2: _WorkerFailure(ValueError("later rank"))})
    assert isinstance(error, SchemaValidationError) and str(error) == "bad rows" and error.report == report

    transient = translate_worker_failure({0: RegistryError("store busy", transient=True)})
    assert isinstance(transient, RegistryError) and transient.transient


def test_a_foreign_worker_error_becomes_a_training_error_naming_the_rank():
    error = translate_worker_failure({3: _WorkerFailure(ValueError("[12:00:00] /src/x.cc:9: Check failed: y"))})
    assert isinstance(error, TrainingError)
    assert "worker rank 3: ValueError: Check failed: y" in str(error)


def test_errors_a_user_can_cause_are_trainflow_errors_with_the_builtin_base_snowflake_names():
    import pytest

    from trainflow.distributors.pytorch import get_context
    from trainflow.errors import InvalidArgument, OutsideTrainingError, TrainflowError

    with pytest.raises(OutsideTrainingError, match="only works inside a training function") as err:
        get_context()
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, TrainflowError)
    bad = InvalidArgument("report() takes a dict")
    assert isinstance(bad, TypeError) and isinstance(bad, ValueError) and isinstance(bad, TrainflowError)
