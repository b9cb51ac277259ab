"""Retry policy: I/O hiccups are retried, a user's mistake never is."""
from __future__ import annotations

from prefect.states import Completed, Failed

from tasks.retry import transient_only
from trainflow.errors import DataSourceNotFound, RegistryError, ResourceError, SchemaValidationError
from trainflow.spec import SpecError


def test_transient_errors_are_retried():
    assert transient_only(None, None, Failed(data=OSError("connection reset by peer")))
    assert transient_only(None, None, Failed(data=TimeoutError("read timed out")))


def test_user_errors_are_not_retried():
    for exc in (SpecError("trainer.n_estimators: bad"), SchemaValidationError("age < 18"),
                DataSourceNotFound("no table"), ResourceError("no GPUs")):
        assert not transient_only(None, None, Failed(data=exc))


def test_success_is_not_retried():
    assert not transient_only(None, None, Completed(data=1))


def test_registry_errors_are_retried_only_when_transient():
    assert transient_only(None, None, Failed(data=RegistryError("store locked", transient=True)))
    assert not transient_only(None, None, Failed(data=RegistryError("promotion metric 'auc' missing")))
