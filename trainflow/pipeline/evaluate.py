"""Evaluate: distributed batch prediction on the eval data, reduced to the spec's metrics.

The current champion is scored in the same pass, on the same rows, so promotion compares two models
on one set of data (not the new metric against the champion's stored one from another eval set).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trainflow.distributors.scoring import ModelToScore, score_models
from trainflow.metrics import finalize
from trainflow.pipeline.champion import find_champion
from trainflow.frameworks import FitOutcome
from trainflow.pipeline.load import LoadedData
from trainflow.registry import ChampionScore
from trainflow.spec import JobSpec


@dataclass(frozen=True)
class Evaluation(Mapping[str, float]):
    """The new model's metrics (this mapping) and the champion's, scored on the same eval data."""

    metrics: dict[str, float]
    champion: ChampionScore

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)


def candidate_model(spec: JobSpec, outcome: FitOutcome) -> ModelToScore:
    """The freshly trained model, as the scorer runs it."""
    return ModelToScore(outcome.framework.scorer(), outcome.model, list(spec.features))


def evaluate(spec: JobSpec, outcome: FitOutcome, data: LoadedData) -> Evaluation:
    names = spec.resolved_metrics
    found = find_champion(spec.register.model_name, spec.task)
    models = [candidate_model(spec, outcome)]
    if found is not None and found.model is not None:
        models.append(found.model)
    stats = score_models(models, data.eval, spec.label, spec.task)
    metrics = finalize(spec.task, stats[0], names)
    if found is None:
        return Evaluation(metrics, ChampionScore(None))
    if found.model is None:
        return Evaluation(metrics, ChampionScore(found.version, None, found.unscorable, found.framework))
    scored = stats[1]
    if isinstance(scored, str):  # its columns are gone or its predictions failed on these rows
        return Evaluation(metrics, ChampionScore(found.version, None, scored, found.framework))
    return Evaluation(metrics, ChampionScore(found.version, finalize(spec.task, scored, names),
                                             framework=found.framework))
