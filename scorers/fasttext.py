"""fastText classifiers: training from labelled text, a JSON model card, batched scoring.

Defaults follow DCLM's quality classifier (word bigrams, dim 100, lr 0.1, 5 epochs). `wordNgrams`
> 1 keeps fastText's hashing buckets in use, which also avoids its uninitialised-matrix NaNs on
few threads (with bucket 0 and no character n-grams, part of the input matrix is left uninitialised
when `thread` is small, and training can fail with "Encountered NaN"). One thread by default: with
more, fastText's lock-free SGD is faster but no longer gives the same model twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from winnow.scorers.evaluation import heldout_metrics, holdout_split, roc_auc  # noqa: F401 - roc_auc: public here

LABEL_PREFIX = "__label__"


def fold(text: str) -> str:
    """fastText reads one example per line: newlines become spaces (it splits words on whitespace)."""
    return text.replace("\n", " ").replace("\r", " ")


@dataclass
class FastTextParams:
    dim: int = 100
    lr: float = 0.1
    epoch: int = 5
    wordNgrams: int = 2  # noqa: N815 - fastText's own parameter names
    minCount: int = 1  # noqa: N815
    bucket: int = 2_000_000
    thread: int = 1  # fastText's lock-free SGD is only reproducible on one thread
    seed: int = 0
    loss: str = "softmax"
    extra: dict = field(default_factory=dict)

    def as_kwargs(self) -> dict:
        kwargs = {k: v for k, v in self.__dict__.items() if k not in ("extra", "seed")}
        return {**kwargs, **self.extra}


def train(texts: list[str], labels: list[str], out: str | Path, params: FastTextParams | None = None, *,
          positive: str, holdout: float = 0.1) -> dict:
    """Train a classifier, write `out` (.bin) and `out`.json (the model card); returns the card.

    The card records `positive`, the label whose probability scores a document (a stage reads it
    from there, so it is never guessed). A seeded `holdout` share is kept out of training to
    measure precision, recall and ROC AUC of that label.
    """
    import fasttext

    params = params or FastTextParams()
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts (got {len(texts)} texts, {len(labels)} labels)")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"need at least two labels to train a classifier, got {classes}")
    if positive not in classes:
        raise ValueError(f"positive label {positive!r} is not among the labels {classes}")
    train_idx, test = holdout_split(len(texts), holdout, params.seed)
    n_test = len(test)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for i in train_idx:
            f.write(f"{LABEL_PREFIX}{labels[i]} {fold(texts[i])}\n")
        train_file = f.name
    try:
        model = fasttext.train_supervised(input=train_file, verbose=0, **params.as_kwargs())
        data_sha256 = hashlib.sha256(Path(train_file).read_bytes()).hexdigest()
    finally:
        os.unlink(train_file)
    model.save_model(str(out))
    card = {"model": out.name, "labels": classes, "positive_label": positive, "params": params.__dict__,
            "train_examples": len(train_idx), "heldout_examples": n_test, "train_data_sha256": data_sha256,
            "label_counts": {c: labels.count(c) for c in classes}}
    if n_test:  # the model in memory, not read back from the file just written
        scores = FastTextScorer(out, positive, model=model).predict([texts[i] for i in test])
        card["heldout"] = heldout_metrics(np.array([labels[i] == positive for i in test]), scores)
    Path(f"{out}.json").write_text(json.dumps(card, indent=2))
    return card


def load_model(path: str):
    """Load a fastText model (stages do it in `setup`, once per worker process)."""
    import fasttext

    if not Path(path).is_file():
        raise FileNotFoundError(f"fastText model not found: {path}")
    return fasttext.load_model(path)


def card_path(model: str | Path) -> Path:
    """Where a fastText model's card lives: next to it, `<model>.json`."""
    return Path(f"{model}.json")


class FastTextScorer:
    """Probabilities of labels for batches of texts. `positive` (the label `predict` returns) is the
    given one, else the model card's; without either, only `predict_all` and explicit labels work."""

    def __init__(self, path: str | Path, positive: str | None = None, model=None):
        self.path = str(path)
        self.model = model if model is not None else load_model(self.path)
        self.labels = [label.removeprefix(LABEL_PREFIX) for label in self.model.labels]
        card = card_path(path)
        self.positive = positive or (json.loads(card.read_text())["positive_label"] if card.exists() else None)
        if self.positive is not None and self.positive not in self.labels:
            raise ValueError(f"label {self.positive!r} is not one of the model's labels {self.labels}")

    def predict_all(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Probability of every label for every text."""
        labels, probs = self.model.predict([fold(t) for t in texts], k=-1)
        out = {label: np.zeros(len(texts), dtype=np.float32) for label in self.labels}
        for i, (names, values) in enumerate(zip(labels, probs, strict=True)):
            for name, value in zip(names, values, strict=True):
                out[name.removeprefix(LABEL_PREFIX)][i] = value
        return out

    def predict(self, texts: list[str], label: str | None = None) -> np.ndarray:
        label = label or self.positive
        if label is None:
            raise ValueError(f"{self.path} has no model card naming its positive label: say which of "
                             f"{self.labels} to score")
        return self.predict_all(texts)[label]
