"""A Hugging Face sequence classifier or regressor from a local directory, run through winnow's
batched inference engine (FineWeb-Edu-style regression heads and multi-label classifiers alike)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from winnow.gpu.engine import InferenceEngine, pick_device


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


def make_tiny_classifier(path: str | Path, texts: list[str], num_labels: int = 2, vocab_size: int = 2000,
                         hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A small randomly initialised BERT classifier with a WordPiece tokenizer trained on `texts`,
    saved as a Hugging Face directory (for tests, demos and benchmarks: no hub needed)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls),
                                                                                             ("[SEP]", sep)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=hidden * 2, max_position_embeddings=512,
                        num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(path)
    return path
