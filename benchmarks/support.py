"""Helpers the tests and the benchmarks share (not part of winnow): a stage run on its own, a tiny
transformer classifier built without a hub, and near copies of a text. The tests put this folder on
`sys.path`."""

from __future__ import annotations

import random
from pathlib import Path

from winnow.runtime import RuntimeOptions, Shard, Step, run_segment
from winnow.schemas.manifest import StageManifest
from winnow.stages import Stage
from winnow.storage.fs import Location


def run_stage(stage: Stage, shards: list[Shard], stage_dir: Location, config_hash: str,
              options: RuntimeOptions) -> tuple[StageManifest, bool]:
    """Run (or resume, or skip) one stage as a segment of its own; its manifest and whether it was skipped."""
    result = run_segment([Step(stage, stage_dir, config_hash)], shards, options)
    return result.manifests[0], result.skipped


def in_fresh_process(function, *args):
    """`function(*args)` in a process of its own (nothing cached by an earlier measurement), which then exits
    normally, so its exit handlers stop what it started (Prefect's local API server)."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(function, args)
    finally:
        pool.close()
        pool.join()


def edited(text: str, rng: random.Random, share: float) -> str:
    """A near copy of `text`: `share` of its words (at least one) replaced by one of six filler words."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * share))):
        words[i] = rng.choice(["alpha", "bravo", "delta", "echo", "kilo", "lima"])
    return " ".join(words)


def make_tiny_classifier(path: str | Path, texts: list[str], num_labels: int = 2, vocab_size: int = 2000,
                         hidden: int = 64, layers: int = 2, seed: int = 0, heads: int = 4,
                         intermediate: int | None = None) -> Path:
    """A randomly initialised BERT classifier (small by default; any shape, e.g. BERT-base for speed
    benchmarks) with a WordPiece tokenizer trained on `texts`, saved as a Hugging Face directory (for
    tests, demos and benchmarks: no hub needed)."""
    import torch
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
                        num_attention_heads=heads, intermediate_size=intermediate or hidden * 2,
                        max_position_embeddings=512,
                        num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(path)
    return path
