"""The declarative job spec: one validated object = one training job.

`models` holds the pydantic models, `messages` turns validation errors into one readable SpecError,
`loading` reads dicts, YAML text and files (with `--set` overrides).
"""
from trainflow.spec.base import SpecError
from trainflow.spec.loading import load_spec, parse_score_spec, parse_spec, spec_from_yaml_text
from trainflow.defaults import DEFAULT_DATABASE
from trainflow.spec.models import (
    DEFAULT_METRICS,
    LOWER_IS_BETTER,
    TASK_METRICS,
    ColumnCheck,
    DataSpec,
    EvaluateSpec,
    InlineSchema,
    JobSpec,
    PromoteOn,
    RegisterSpec,
    ScalingSpec,
    ScheduleSpec,
    SourceSpec,
    TrainerSpec,
)
from trainflow.spec.score import ScoreSpec, SinkSpec

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_METRICS",
    "LOWER_IS_BETTER",
    "TASK_METRICS",
    "ColumnCheck",
    "DataSpec",
    "EvaluateSpec",
    "InlineSchema",
    "JobSpec",
    "PromoteOn",
    "RegisterSpec",
    "ScalingSpec",
    "ScheduleSpec",
    "ScoreSpec",
    "SinkSpec",
    "SourceSpec",
    "SpecError",
    "TrainerSpec",
    "load_spec",
    "parse_score_spec",
    "parse_spec",
    "spec_from_yaml_text",
]
