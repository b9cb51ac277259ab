"""Hyper-parameter tuning with Snowflake's API (`snowflake.ml.modeling.tune`, import path changed).

    from trainflow.tune import Tuner, TunerConfig, get_tuner_context, uniform, loguniform, randint, choice
    from trainflow.tune.search import RandomSearch, GridSearch, BayesOpt
"""
from trainflow.tune.config import TunerConfig
from trainflow.tune.context import TunerContext, get_tuner_context
from trainflow.tune.results import TunerResults
from trainflow.tune.sampling import (
           SamplingFunction,
           choice,
           loguniform,
           randint,
           uniform,
)
from trainflow.tune.tuner import Tuner

__all__ = ["SamplingFunction", "Tuner", "TunerConfig", "TunerContext", "TunerResults", "choice",
           "get_tuner_context", "loguniform", "randint", "uniform"]
