"""Toxicity: one probability column per configured label (`toxicity_<label>`) and their maximum
as `toxicity_score`; a document is dropped when any label is over its own threshold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from winnow.stages.scoring import ScoreStage


class Toxicity(ScoreStage):
    name = "toxicity"
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
