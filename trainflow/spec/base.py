"""What every part of the spec shares: its error, cross-field problems, the strict base model."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
)
from pydantic_core import PydanticCustomError

from trainflow.errors import ConfigError


_REF = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"  # "package.module:attribute"
_NAME = r"^[A-Za-z0-9_.-]+$"
MODEL_URI = r"^models:/[^/@\s]+(/\d+|@[\w-]+)$"
_PATTERN_HELP = {
    MODEL_URI: "must be a registered version, models:/NAME@ALIAS or models:/NAME/VERSION",
    _REF: 'must be "package.module:name" (an importable module and an attribute in it)',
    _NAME: "may contain only letters, digits, '-', '_' and '.'",
}


class SpecError(ConfigError):
    """The job spec is invalid; `problems` holds one `key.path: what is wrong` line per problem."""

    def __init__(self, message: str, problems: Sequence[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


def _problems(*items: tuple[str, str]) -> PydanticCustomError:
    """A cross-field error carrying its own key paths (relative to the model that raises it)."""
    summary = "; ".join(f"{p}: {m}" if p else m for p, m in items)
    return PydanticCustomError("spec_problems", "{summary}", {"summary": summary, "problems": list(items)})


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
