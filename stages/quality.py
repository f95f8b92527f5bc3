"""Quality: a classifier's probability of the high-quality label as `quality_score`; keep documents
at or above an absolute threshold, or exactly the top share of the corpus by documents or characters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from winnow.scorers import positive_label
from winnow.stages.scoring import ScoreStage


class Quality(ScoreStage):
    name = "quality"
    primary = "quality_score"

    def __init__(self, config):
        super().__init__(config)
        self.positive = positive_label(config.scorer, config.label)  # fails here, in the driver, before any work

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        scores = scorer.predict_all(texts)
        if self.positive not in scores:
            raise ValueError(f"label {self.positive!r} is not one of the model's labels {sorted(scores)}")
        return {self.primary: scores[self.positive]}

    def decide(self, table: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        if self.config.keep_top is not None:
            return self.top_share_keep(table)
        scores = table.column(self.primary).to_numpy()
        keep = scores >= self.config.threshold
        details = [f"{self.primary} {s:.4f} < threshold {self.config.threshold}" for s in scores[~keep]]
        return keep, ["below_threshold"] * len(details), details
