"""trainflow's own exceptions: a shallow tree grouped by cause.

Third-party errors (Ray, pandera, DuckDB, pyarrow, MLflow) are translated at the boundary into one of
these, so a user sees what went wrong and how to fix it before any foreign stack trace.
"""
from __future__ import annotations


class TrainflowError(Exception):
    """Base of every error trainflow raises on purpose.

    `transient` is True when the cause may go away by itself (an unreachable or busy store): the
    pipeline retries those, never the others (a retry cannot fix a bad spec or bad data).
    """

    transient: bool = False


class DataError(TrainflowError):
    """The data cannot be used: missing table/file/column, wrong type, empty, bad labels."""


class DataSourceNotFound(DataError):
    """A table, file, folder or database that the job names does not exist."""


class SchemaValidationError(DataError):
    """Rows or columns break the job's schema checks; `report` holds the failure cases."""

    def __init__(self, message: str, report: list[dict] | None = None):
        super().__init__(message)
        self.report = report or []


class DataChangedError(DataError):
    """The data differs from the data a model version was trained on; `changes` names each difference."""

    def __init__(self, message: str, changes: list[str] | None = None):
        super().__init__(message)
        self.changes = changes or []


class ResourceError(TrainflowError):
    """The cluster cannot provide what the job asks for (workers, CPUs, GPUs) or cannot be reached."""


class PreflightError(ResourceError):
    """The cluster is not ready for a run (version skew, storage a node cannot read, a server a node
    cannot reach); `problems` holds each finding with its fix. Raised before any worker starts."""

    def __init__(self, problems: list):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"The Ray cluster is not ready for this run ({len(self.problems)} problem(s), found "
                         f"before any worker started; TRAINFLOW_PREFLIGHT=0 skips this check):\n{lines}")

    def __reduce__(self):
        return type(self), (self.problems,)


class ConfigError(TrainflowError):
    """An argument or spec value is invalid; the message names the field and what is accepted."""


class InvalidArgument(ConfigError, TypeError, ValueError):
    """A function got an argument of the wrong type or value (also caught as TypeError/ValueError)."""


class NotFittedError(TrainflowError, AttributeError):
    """A fitted-state accessor was called before `fit`."""


class OutsideTrainingError(TrainflowError, RuntimeError):
    """Called outside the distributed training function it belongs to (Snowflake raises RuntimeError)."""


class BatchShapeError(DataError, RuntimeError):
    """A DataLoader was asked to stack dataset batches of different sizes."""


class TrainingError(TrainflowError, RuntimeError):
    """Training started but failed inside the workers (a RuntimeError, as Snowflake's failed runs are)."""


class RegistryError(TrainflowError):
    """Logging or registering the model failed; no version was left with an alias."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient
