"""Quality: a classifier's probability of the high-quality label as `quality_score`; keep documents
at or above an absolute threshold (`Quality`, per shard), or exactly the top share of the corpus by
documents or characters (`QualityTopShare`, a global stage)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from winnow.schemas.config import Fraction, StageConfig
from winnow.scorers.config import ScorerConfig, positive_label
from winnow.stages.base import Plot
from winnow.stages.scoring import ScoreStage, TopShareStage


class QualityConfig(StageConfig):
    """Score documents with a quality classifier; keep by absolute threshold or top share."""

    name: Literal["quality"] = "quality"
    scorer: ScorerConfig
    label: str | None = Field(None, description="the 'high quality' label; default: the model card's positive label")
    mode: Literal["filter", "annotate"] = "filter"
    threshold: float | None = Field(None, description="keep documents scoring at least this")
    keep_top: Fraction | None = Field(None, description="keep exactly this share of the corpus with the highest "
                                                        "scores (ties by id)")
    share_by: Literal["documents", "characters"] = "documents"

    @model_validator(mode="after")
    def _one_rule(self) -> QualityConfig:
        if self.mode == "filter" and (self.threshold is None) == (self.keep_top is None):
            raise ValueError("mode 'filter' needs exactly one of `threshold` or `keep_top` (or use mode: annotate)")
        if self.scorer.kind == "fasttext" and self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold} is not a probability in [0, 1]")
        return self


class Quality(ScoreStage):
    Config = QualityConfig
    plots = (Plot("quality_score"),)
    primary = "quality_score"

    def __init__(self, config, run=None):
        super().__init__(config, run)
        self.positive = positive_label(config.scorer, config.label)  # fails here, in the driver, before any work

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        scores = scorer.predict_all(texts)
        if self.positive not in scores:
            raise ValueError(f"label {self.positive!r} is not one of the model's labels {sorted(scores)}")
        return {self.primary: scores[self.positive]}

    def decide(self, table: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        scores = table.column(self.primary).to_numpy()
        keep = scores >= self.config.threshold
        details = [f"{self.primary} {s:.4f} < threshold {self.config.threshold}" for s in scores[~keep]]
        return keep, ["below_threshold"] * len(details), details


class QualityTopShare(TopShareStage, Quality):
    """Quality keeping exactly the top share of the corpus (`keep_top`): a global stage."""
