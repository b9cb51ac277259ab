"""The current champion, loaded to be scored beside the candidate on the candidate's eval data.

The champion's run records its framework (`trainflow.framework`) and features (`trainflow.features`,
else the model signature's columns); the version is resolved from `models:/<name>@champion` once, and
that version (not the alias) is loaded, so a later alias move cannot change what was scored. Anything
that keeps it from being scored (unknown framework, model that does not load, another task) makes it
*unscorable*, with the reason: the spec's `if_champion_unscorable` decides what that means.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from trainflow import frameworks
from trainflow.distributors.scoring import ModelToScore
from trainflow.errors import ConfigError
from trainflow.registry import ChampionRecord, champion_record, download_model, recorded_features


@dataclass(frozen=True)
class FoundChampion:
    """The champion version, and either the model to score or why it cannot be scored."""

    version: str
    framework: str
    model: ModelToScore | None = None
    unscorable: str = ""


def find_champion(model_name: str, task: str) -> FoundChampion | None:
    """The champion of `model_name` ready to score, None when there is none. Reading the alias must
    work (a flaky store read as "no champion" would promote anything); loading it may fail."""
    record = champion_record(model_name)
    if record is None:
        return None
    framework = record.framework or "unknown"
    recorded_task = record.tags.get("trainflow.task")
    if recorded_task and recorded_task != task:
        return FoundChampion(record.version, framework,
                             unscorable=f"it is a {recorded_task} model and this run trains a {task} model")
    try:
        fw = frameworks.get(record.framework)
    except ConfigError:
        return FoundChampion(record.version, framework,
                             unscorable=f"its run records framework {record.framework!r} (tag trainflow.framework); "
                                        f"trainflow loads {', '.join(sorted(frameworks.names()))}")
    local = tempfile.mkdtemp(prefix="trainflow-champion-")
    try:
        folder = download_model(record.uri, local)
        features = _features(record, folder, tempfile.mkdtemp(dir=local))
        if not features:
            return FoundChampion(record.version, framework,
                                 unscorable="its run records no feature list (tag trainflow.features) and its "
                                            "signature names no columns")
        model = fw.load_registered(folder)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a reason, reported with the decision
        return FoundChampion(record.version, framework, unscorable=f"its model {record.uri} does not load: "
                             f"{type(exc).__name__}: {_first_line(exc)}")
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return FoundChampion(record.version, framework, ModelToScore(fw.scorer(), model, features, optional=True))


def _features(record: ChampionRecord, folder: str, scratch: str) -> list[str]:
    recorded = recorded_features(record, scratch)
    if recorded:
        return recorded
    from mlflow.models import Model

    signature = Model.load(folder).signature
    if signature is None or signature.inputs is None or signature.inputs.is_tensor_spec():
        return []
    names = signature.inputs.input_names()
    return [str(n) for n in names] if all(isinstance(n, str) and n for n in names) else []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]
