"""Tokenizers: load any Hugging Face fast tokenizer from a local file or directory, and train a
byte-level BPE on a sample of a corpus with the `tokenizers` library."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"
BOS = "<|startoftext|>"
PAD = "<|pad|>"


def train_bpe(texts: Iterable[str], vocab_size: int, out: str | Path, min_frequency: int = 2) -> Path:
    """Train a byte-level BPE and save it as a Hugging Face directory (tokenizer.json + config)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[EOS, BOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    out = Path(out)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=BOS,
                            pad_token=PAD).save_pretrained(out)
    return out


def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a directory holding one."""
    from tokenizers import Tokenizer

    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path} (give a tokenizer.json file or a HF directory)")
    return Tokenizer.from_file(str(file))


def special_token(path: str, kind: str) -> str | None:
    """The `eos_token`/`bos_token` named in a HF directory's tokenizer_config.json, if any."""
    config = Path(path) / "tokenizer_config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text()).get(f"{kind}_token")
    return value.get("content") if isinstance(value, dict) else value


def token_dtype(vocab_size: int) -> np.dtype:
    """The token type megatron-core uses for a vocabulary (its `DType.optimal_dtype`): `uint16` while every
    id fits (winnow keeps it up to 65,536 entries, megatron-core from 65,500 on switches already), else
    `int32` (Megatron's dtype code 4; it has no unsigned 32-bit code). Parquet token columns use the same."""
    if vocab_size <= np.iinfo(np.uint16).max + 1:
        return np.dtype(np.uint16)
    if vocab_size <= np.iinfo(np.int32).max + 1:
        return np.dtype(np.int32)
    raise ValueError(f"a vocabulary of {vocab_size:,} tokens does not fit Megatron's int32 token ids")
