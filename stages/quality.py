"""Quality: a classifier's probability of the high-quality label as `quality_score`; keep documents
at or above an absolute threshold, or the top share of the corpus by documents or characters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from winnow.stages.scoring import ScoreStage


class Quality(ScoreStage):
    name = "quality"
    primary = "quality_score"

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        return {self.primary: scorer.predict_all(texts)[self.config.label or scorer.positive]}

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
