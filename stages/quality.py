"""Quality: a classifier's probability of the high-quality label as `quality_score`; keep documents
at or above an absolute threshold, or the top share of the corpus by documents or characters."""

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
        scores = table.column(self.primary).to_numpy()
        if self.config.keep_top is not None:
            limit, reason = self.cutoff, "below_top_share"
            rule = f"top {self.config.keep_top:.0%} by {self.config.share_by} (cut-off {limit:.4f})"
        else:
            limit, reason, rule = self.config.threshold, "below_threshold", f"threshold {self.config.threshold}"
        keep = scores >= limit
        details = [f"{self.primary} {s:.4f} < {rule}" for s in scores[~keep]]
        return keep, [reason] * len(details), details
