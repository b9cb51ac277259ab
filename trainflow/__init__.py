"""trainflow: Snowflake ML's distributed trainers on Ray, orchestrated by Prefect, registered in MLflow."""
from trainflow.errors import (
    ConfigError,
    DataError,
    DataSourceNotFound,
    NotFittedError,
    RegistryError,
    ResourceError,
    SchemaValidationError,
    TrainflowError,
    TrainingError,
)

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "DataError", "DataSourceNotFound", "NotFittedError", "RegistryError",
    "ResourceError", "SchemaValidationError", "TrainflowError", "TrainingError",
]
