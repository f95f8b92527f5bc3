"""How trained scorers are measured: one seeded held-out split for every trainer, and its metrics."""

from __future__ import annotations

import random

import numpy as np


def holdout_split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n examples: a seeded shuffle, the first `holdout` share held out.
    Every trainer splits this way, so models trained with the same seed are measured on the same texts."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = int(n * holdout)
    return order[n_test:], order[:n_test]


def heldout_metrics(truth: np.ndarray, scores: np.ndarray) -> dict:
    """ROC AUC of the scores, and precision and recall of scores >= 0.5, against boolean truth."""
    predicted = scores >= 0.5
    tp = int((predicted & truth).sum())
    return {"roc_auc": roc_auc(truth, scores), "precision": tp / max(int(predicted.sum()), 1),
            "recall": tp / max(int(truth.sum()), 1)}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's); NaN when the labels have one class only."""
    from sklearn.metrics import roc_auc_score  # (imported here: scorers/ loads where scikit-learn may not be)

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))
