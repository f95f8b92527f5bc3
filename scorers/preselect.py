"""PreSelect's predictive strength (Shum et al. 2025): how well a document's loss ranks a family
of models the same way their benchmark scores do.

For models i, j with benchmark scores s_i > s_j, the pair agrees on document d when the better
model has the strictly lower loss on d (bits per character). S(d) = agreeing pairs / compared
pairs, in [0, 1]. Pairs of models with equal benchmark scores carry no order and are not
compared; equal losses count as disagreement (no evidence for the order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def predictive_strength(losses: np.ndarray, benchmark: np.ndarray) -> np.ndarray:
    """losses: (documents x models); benchmark: (models,). Returns S per document."""
    losses, benchmark = np.asarray(losses, dtype=float), np.asarray(benchmark, dtype=float)
    if losses.ndim != 2 or losses.shape[1] != benchmark.shape[0]:
        raise ValueError(f"losses must be (documents x {benchmark.shape[0]} models), got {losses.shape}")
    agree = np.zeros(losses.shape[0])
    compared = 0
    for i in range(len(benchmark)):
        for j in range(len(benchmark)):
            if benchmark[i] > benchmark[j]:
                compared += 1
                agree += losses[:, i] < losses[:, j]
    if compared == 0:
        raise ValueError("all benchmark scores are equal: there is no order to predict")
    return agree / compared


def preselect_labels(strength: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positives: documents with S = 1; negatives: the same number of lowest-S documents."""
    positives = np.flatnonzero(strength == 1.0)
    rest = np.flatnonzero(strength < 1.0)
    rng = np.random.default_rng(seed)
    order = rest[np.lexsort((rng.random(len(rest)), strength[rest]))]  # lowest S first, ties shuffled
    return positives, order[: len(positives)]


def train_preselect(texts: list[str], model_dirs: list[str], benchmark: list[float], out, seed: int = 0,
                    device: str = "auto", epochs: int = 3) -> dict:
    """Bits per character of every text under every model -> S(d) -> balanced labels -> fastText.

    The classifier follows the reference: word bigrams, 3 epochs, lr 0.1 (on a few hundred texts,
    more epochs spread its scores beyond a hair around 0.5). Returns its card.
    """
    from winnow.scorers.fasttext import FastTextParams, train
    from winnow.scorers.lm import LMScorer

    if len(model_dirs) != len(benchmark) or len(model_dirs) < 2:
        raise ValueError(f"need one benchmark score per model and at least two models "
                         f"(got {len(model_dirs)} models, {len(benchmark)} scores)")
    losses = np.stack([LMScorer(m, device=device).score(texts)["bits_per_char"] for m in model_dirs], axis=1)
    strength = predictive_strength(losses, np.array(benchmark))
    positives, negatives = preselect_labels(strength, seed)
    if len(positives) == 0:
        raise ValueError("no document has predictive strength 1: the models' losses never follow their "
                         "benchmark order; use more (or more different) models or a larger corpus")
    picked = list(positives) + list(negatives)
    labels = ["pos"] * len(positives) + ["neg"] * len(negatives)
    card = train([texts[i] for i in picked], labels, out, FastTextParams(epoch=epochs, lr=0.1, seed=seed),
                 positive="pos", holdout=0.1)
    card["preselect"] = {"documents": len(texts), "positives": int(len(positives)),
                         "mean_strength": float(strength.mean()), "models": list(model_dirs),
                         "benchmark_scores": list(benchmark)}
    Path(f"{out}.json").write_text(json.dumps(card, indent=2))
    return card
