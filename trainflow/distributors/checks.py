"""Argument checks of the estimators' public methods: a ConfigError that names the argument and the fix."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainflow.data.connector import DataConnector
from trainflow.distributors.placement import ScalingRequest
from trainflow.errors import ConfigError, DataError, InvalidArgument


def check_columns_args(input_cols: Sequence[str], label_col: str) -> tuple[list[str], str]:
    if isinstance(input_cols, str) or not input_cols or not all(isinstance(c, str) for c in input_cols):
        raise ConfigError(f"input_cols={input_cols!r} is invalid: pass a non-empty list of column names.")
    if len(set(input_cols)) != len(input_cols):
        raise ConfigError(f"input_cols={list(input_cols)!r} lists a column twice.")
    if not isinstance(label_col, str) or not label_col:
        raise ConfigError(f"label_col={label_col!r} is invalid: pass the name of the label column.")
    if label_col in input_cols:
        raise ConfigError(f"label_col {label_col!r} is also in input_cols; a model cannot use its label as a feature.")
    return list(input_cols), label_col


def check_every(every: int | None) -> int | None:
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ConfigError(f"checkpoint_every={every!r} is invalid: use None (final model only) or an integer >= 1.")
    return every


def check_restarts(restarts: int) -> int:
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 0:
        raise ConfigError(f"max_restarts={restarts!r} is invalid: use an integer >= 0.")
    return restarts


def check_verbose(verbose_eval: int | bool | None) -> int | None:
    if verbose_eval is None or verbose_eval is False:
        return None
    if verbose_eval is True:
        return 1
    if not isinstance(verbose_eval, int) or verbose_eval < 1:
        raise ConfigError(f"verbose_eval={verbose_eval!r} is invalid: use None, True or an integer >= 1.")
    return verbose_eval


def as_connector(data: Any, what: str) -> DataConnector:
    try:
        return DataConnector.from_dataframe(data)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


def as_request(config: Any) -> ScalingRequest:
    if not all(hasattr(config, name) for name in ("num_workers", "num_cpu_per_worker", "use_gpu")):
        raise InvalidArgument(
            f"scaling_config={config!r} is a {type(config).__name__}: pass the estimator's scaling config, e.g. "
            "XGBScalingConfig(num_workers=2) or LightGBMScalingConfig(num_workers=2) (-1 sizes from the cluster).")
    return ScalingRequest(config.num_workers, config.num_cpu_per_worker, config.use_gpu)
