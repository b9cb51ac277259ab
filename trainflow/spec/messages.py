"""Pydantic's validation errors as one readable SpecError: `key.path: what is wrong (accepted: ...)`.

A user should fix the spec, not read pydantic output; values of secret-looking keys are never echoed.
"""
from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from trainflow.secrets import MASK, is_secret_name, mask_text
from trainflow.spec.base import _PATTERN_HELP, SpecError, _join
from trainflow.spec.models import _UNION_TAGS, JobSpec


def _members(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional/Union/Annotated unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in get_args(annotation):
            if arg is not type(None):
                out.extend(_members(arg))
        return out
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _field_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _walk(loc: Sequence[Any], root: type[BaseModel] = JobSpec) -> tuple[list[str], type[BaseModel] | None]:
    """Turn pydantic's loc into the user's key path; also return the model at the path's end."""
    annotation: Any = root
    path: list[str] = []
    for part in loc:
        if part in _UNION_TAGS and path == ["schema"]:
            continue  # discriminated-union tag, not a key the user wrote
        model = _model_in(annotation)
        if model is not None:
            fields = {(f.alias or n): f for n, f in model.model_fields.items()}
            fields.update(model.model_fields)
            field = fields.get(part)
            annotation = field.annotation if field is not None else None
            path.append((field.alias or str(part)) if field is not None else str(part))
            continue
        members = _members(annotation)
        origin = get_origin(members[0]) if members else None
        if origin is dict:
            annotation = get_args(members[0])[1]
            path.append(str(part))
        elif origin is list:
            annotation = get_args(members[0])[0]
            path.append(f"[{part}]" if isinstance(part, int) else str(part))
        else:
            annotation = None
            path.append(str(part))
    return path, _model_in(annotation)


def _dotted(path: Sequence[str]) -> str:
    text = ""
    for part in path:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "(top level)"


def _short(value: Any) -> str:
    text = MASK if value == MASK else mask_text(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: dict[str, Any], root: type[BaseModel] = JobSpec) -> list[str]:
    """One `key.path: what is wrong (accepted: ...)` line per pydantic error."""
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "spec_problems":
        path, _ = _walk(loc, root)
        return [_dotted(path + ([p] if p else [])) + f": {m}" for p, m in ctx["problems"]]
    path, model = _walk(loc, root)
    where = _dotted(path)
    if is_secret_name(where):  # never echo a value whose key looks like a password or token
        error = {**error, "input": MASK}
    if kind == "extra_forbidden":
        _, parent = _walk(loc[:-1], root)
        accepted = _field_keys(parent) if parent is not None else []
        key = str(loc[-1])
        hint = difflib.get_close_matches(key, accepted, n=1)
        did = f"did you mean {hint[0]!r}? " if hint else ""
        return [f"{where}: unknown key ({did}accepted: {_join(accepted)})"]
    if kind == "missing":
        return [f"{where}: required but missing"]
    if kind == "literal_error":
        accepted = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return [f"{where}: {_short(error['input'])} is not accepted (accepted: {accepted})"]
    if kind in ("model_type", "model_attributes_type", "dict_type") and model is not None:
        return [f"{where}: must be a mapping with keys {_join(_field_keys(model))} (got {_short(error['input'])})"]
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_HELP:
        return [f"{where}: {_PATTERN_HELP[ctx['pattern']]} (got {_short(error['input'])})"]
    msg = error["msg"]
    if msg.startswith("Value error, "):
        return [f"{where}: {msg[len('Value error, '):]}"]
    return [f"{where}: {msg[0].lower() + msg[1:]} (got {_short(error['input'])})"]


def _spec_error(exc: ValidationError, source: str | None, root: type[BaseModel] = JobSpec,
                what: str = "job spec") -> SpecError:
    problems: list[str] = []
    for error in exc.errors():
        for line in _describe(error, root):
            if line not in problems:
                problems.append(line)
    where = f" in {source!r}" if source else ""
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    fix = "Fix these keys in the spec" + (" file or the --set overrides." if source else ".")
    return SpecError(f"Invalid {what}{where} ({count}): " + "; ".join(problems) + ". " + fix, problems)
