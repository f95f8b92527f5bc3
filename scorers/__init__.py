"""Models the stages use and the code that trains them (fastText, transformer classifiers).

Scorers never import Ray: stages run them inside Ray workers, one loaded model per worker process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np


class Scorer(Protocol):
    labels: list[str]
    positive: str

    def predict_all(self, texts: list[str]) -> dict[str, np.ndarray]: ...


@lru_cache(maxsize=4)
def load_scorer(config) -> Scorer:
    """The scorer a stage's `scorer:` config describes, loaded once per process."""
    if config.kind == "fasttext":
        from winnow.scorers.fasttext import FastTextScorer

        return FastTextScorer(config.model)
    from winnow.scorers.transformer import TransformerScorer

    return TransformerScorer(config.model, max_length=config.max_length, max_batch_tokens=config.max_batch_tokens,
                             device=config.device)
