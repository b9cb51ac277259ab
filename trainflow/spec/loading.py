"""Entry points: a dict (a Prefect parameter), YAML text or a YAML file with --set overrides → JobSpec."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    ValidationError,
)

from trainflow.spec.base import SpecError, _join
from trainflow.spec.messages import _field_keys, _spec_error
from trainflow.spec.models import JobSpec
from trainflow.spec.score import ScoreSpec

SpecT = TypeVar("SpecT", JobSpec, ScoreSpec)


def parse_spec(data: Any, *, source: str | None = None) -> JobSpec:
    """Validate a dict (parsed YAML or a Prefect parameter) into a JobSpec, or raise SpecError."""
    return _parse(JobSpec, data, source)


def parse_score_spec(data: Any, *, source: str | None = None) -> ScoreSpec:
    """Validate a dict into a ScoreSpec (a batch-scoring job), or raise SpecError."""
    return _parse(ScoreSpec, data, source)


def _parse(model: type[SpecT], data: Any, source: str | None) -> SpecT:
    what = "scoring spec" if model is ScoreSpec else "job spec"
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        where = f" {source!r}" if source else ""
        raise SpecError(
            f"Invalid {what}{where}: the top level must be a mapping of keys "
            f"({_join(_field_keys(model))}), got {type(data).__name__}. Fix the spec file."
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, source, model, what) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML silently overwrites."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        fix = (
            "Keep only one of the duplicate keys."
            if problem.startswith("duplicate key")
            else "Fix the YAML syntax (indentation, quotes, colons) there."
        )
        raise SpecError(
            f"Spec file {source!r} is not valid YAML at{line or ' an unknown position'}: {problem}. {fix}"
        ) from None


def _apply_override(data: dict[str, Any], override: str, source: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise SpecError(
            f"Invalid override {override!r}: expected dotted.key=value "
            "(e.g. trainer.n_estimators=200). Fix the --set argument."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(
            f"Invalid override {override!r}: the value is not valid YAML ({exc}). Quote it or fix it."
        ) from None
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            at = ".".join(parts[: i + 1])
            raise SpecError(
                f"Invalid override {override!r}: {at} in {source!r} is a {type(child).__name__}, "
                f"not a mapping, so {key} cannot be set. Override {at} as a whole instead."
            )
        node = child
    node[parts[-1]] = value


def spec_from_yaml_text(
    text: str, overrides: Sequence[str] = (), *, source: str = "<text>", model: type[SpecT] = JobSpec
) -> SpecT:
    """Parse YAML text, apply overrides, validate (as `model`): the whole of `load_spec` minus the file."""
    data = _read_yaml(text, source)
    if data is None:
        data = {}
        if not overrides:
            raise SpecError(f"Spec {source!r} is empty. Write a job spec there (see ARCHITECTURE.md).")
    if overrides and not isinstance(data, dict):
        return _parse(model, data, source)  # reports the non-mapping top level
    for override in overrides:
        _apply_override(data, override, source)
    return _parse(model, data, source)


def load_spec(path: str | Path, overrides: Sequence[str] = (), model: type[SpecT] = JobSpec) -> SpecT:
    """Read a YAML spec file, apply `dotted.key=value` overrides, and validate it (as `model`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"Spec file {str(p)!r} does not exist. Check the path.") from None
    except IsADirectoryError:
        raise SpecError(f"Spec path {str(p)!r} is a folder, not a YAML file. Name the file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"Spec file {str(p)!r} cannot be read: {exc}.") from None
    return spec_from_yaml_text(text, overrides, source=str(p), model=model)
