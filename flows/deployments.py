"""Deployments: one per spec, named after it, on its schedule: `training-pipeline` for a job spec,
`scoring-pipeline` for a scoring spec (one with a `sink`).

`serve(...)` runs them in this process (schedules fire while it runs); `prefect_yaml(...)` renders the
same deployments for a process work pool (`deployments/prefect.yaml`, `prefect deploy --all`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trainflow.spec import JobSpec, ScheduleSpec, ScoreSpec, load_spec

SPECS_DIR = Path("deployments/specs")
WORK_POOL = "trainflow"
ENTRYPOINT = "flows/training.py:training_pipeline"
SCORING_ENTRYPOINT = "flows/scoring.py:scoring_pipeline"


def spec_paths(paths: list[str] | None = None) -> list[Path]:
    """The given spec files, or every `*.yaml` in the given folders (default deployments/specs)."""
    found: list[Path] = []
    for raw in paths or [str(SPECS_DIR)]:
        path = Path(raw)
        found.extend(sorted(path.glob("*.y*ml")) if path.is_dir() else [path])
    return found


def spec_parameter(spec: JobSpec | ScoreSpec) -> dict[str, Any]:
    """The spec as the deployment's default parameter: what its file says (JSON, with the YAML key
    names), without the defaults, so a run picks up the defaults of the trainflow it runs on."""
    return spec.model_dump(mode="json", by_alias=True, exclude={"schedule"}, exclude_unset=True)


def schedules_of(spec: JobSpec | ScoreSpec) -> list:
    from prefect.schedules import Cron, Interval

    s: ScheduleSpec | None = spec.schedule
    if s is None:
        return []
    if s.cron is not None:
        return [Cron(s.cron, timezone=s.timezone)]
    return [Interval(s.interval_seconds, timezone=s.timezone)]


def load_any(path: Path) -> JobSpec | ScoreSpec:
    """A training job spec, or a scoring spec (one with a `sink`)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None  # load_spec reports it
    return load_spec(path, model=ScoreSpec) if isinstance(data, dict) and "sink" in data else load_spec(path)


def _scoring(spec: ScoreSpec, path: Path) -> dict[str, Any]:
    return {"name": spec.name, "tags": ["trainflow", "scoring"],
            "description": f"{spec.name}: scores with {spec.model} into the {spec.sink.kind} sink (spec {path})"}


def build(paths: list[str] | None = None) -> list:
    from prefect.deployments.runner import EntrypointType

    from flows.pipeline import training_pipeline
    from flows.scoring import scoring_pipeline

    deployments = []
    for path in spec_paths(paths):
        spec = load_any(path)
        if isinstance(spec, ScoreSpec):
            deployments.append(scoring_pipeline.to_deployment(
                schedules=schedules_of(spec), parameters={"spec": spec_parameter(spec)},
                enforce_parameter_schema=True, entrypoint_type=EntrypointType.MODULE_PATH, **_scoring(spec, path)))
            continue
        deployments.append(training_pipeline.to_deployment(
            name=spec.name, schedules=schedules_of(spec), parameters={"spec": spec_parameter(spec)},
            description=f"{spec.name}: trains and registers '{spec.register.model_name}' (spec {path})",
            tags=["trainflow", spec.trainer.framework], enforce_parameter_schema=True,
            entrypoint_type=EntrypointType.MODULE_PATH,  # import flows.pipeline by name: Ray workers can too
        ))
    return deployments


def _schedule_entry(spec: JobSpec | ScoreSpec) -> dict[str, Any]:
    s = spec.schedule
    if s is None:
        return {}
    return {"schedules": [{"cron": s.cron, "timezone": s.timezone} if s.cron
                          else {"interval": s.interval_seconds, "timezone": s.timezone}]}


def prefect_yaml(paths: list[str] | None = None) -> str:
    """`deployments/prefect.yaml`: the same deployments for the `trainflow` process work pool."""
    deployments = []
    for path in spec_paths(paths):
        spec = load_any(path)
        if isinstance(spec, ScoreSpec):
            entry: dict[str, Any] = {**_scoring(spec, path), "entrypoint": SCORING_ENTRYPOINT,
                                     "work_pool": {"name": WORK_POOL}, "parameters": {"spec": spec_parameter(spec)},
                                     "enforce_parameter_schema": True}
            entry.update(_schedule_entry(spec))
            deployments.append(entry)
            continue
        entry = {
            "name": spec.name, "entrypoint": ENTRYPOINT, "tags": ["trainflow", spec.trainer.framework],
            "description": f"{spec.name}: trains and registers '{spec.register.model_name}' (spec {path})",
            "work_pool": {"name": WORK_POOL}, "parameters": {"spec": spec_parameter(spec)},
            "enforce_parameter_schema": True,
        }
        entry.update(_schedule_entry(spec))
        deployments.append(entry)
    header = (
        "# Generated from deployments/specs by `trainflow deployments --write` — edit the specs, not this.\n"
        "# Production path: a process work pool `trainflow` and a worker on a machine with this project:\n"
        "#   prefect work-pool create trainflow --type process\n"
        "#   prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml   (from the project root)\n"
        "#   prefect worker start --pool trainflow\n"
    )
    body = {
        "name": "trainflow",
        "prefect-version": "3.9.1",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}],
        "deployments": deployments,
    }
    return header + yaml.safe_dump(body, sort_keys=False, width=110)
