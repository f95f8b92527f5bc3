"""Toxicity: one probability column per configured label (`toxicity_<label>`) and their maximum
as `toxicity_score`; a document is dropped when any label is over its own threshold."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from winnow.schemas.config import Fraction, StageConfig
from winnow.scorers.config import ScorerConfig
from winnow.stages.base import Plot
from winnow.stages.scoring import ScoreStage


class ToxicityConfig(StageConfig):
    """Score toxicity with one or more labels; drop a document when any label is over its threshold."""

    name: Literal["toxicity"] = "toxicity"
    scorer: ScorerConfig
    thresholds: dict[str, Fraction] = Field(
        default_factory=lambda: {"toxic": 0.5}, description="label -> probability above which a document is dropped")
    mode: Literal["filter", "annotate"] = "filter"


class Toxicity(ScoreStage):
    Config = ToxicityConfig
    plots = (Plot("toxicity_score"),)
    primary = "toxicity_score"

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        missing = set(self.config.thresholds) - set(scorer.labels)
        if missing:
            raise ValueError(f"toxicity thresholds name labels the model does not have: {sorted(missing)} "
                             f"(model labels: {scorer.labels})")
        probs = scorer.predict_all(texts)
        columns = {f"toxicity_{label}": probs[label] for label in self.config.thresholds}
        columns["toxicity_score"] = np.max(np.stack(list(columns.values())), axis=0)
        return columns

    def decide(self, table: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        over = {label: table.column(f"toxicity_{label}").to_numpy() > limit
                for label, limit in self.config.thresholds.items()}
        drop = np.any(np.stack(list(over.values())), axis=0)
        reasons, details = [], []
        for i in np.flatnonzero(drop):
            label = next(lab for lab, mask in over.items() if mask[i])
            reasons.append(f"toxic:{label}")
            value = table.column(f"toxicity_{label}")[int(i)].as_py()
            details.append(f"toxicity_{label} {value:.4f} > {self.config.thresholds[label]}")
        return ~drop, reasons, details
