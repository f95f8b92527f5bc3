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
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels, dtype=bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
