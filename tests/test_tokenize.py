"""Tokenizer training and the tokenize stage."""

import random

import numpy as np
import pyarrow as pa
import pytest

from conftest import documents
from winnow.flows.demo import article
from winnow.schemas.config import TokenizeConfig
from winnow.scorers.tokenizer import EOS, load_tokenizer, token_dtype, train_bpe
from winnow.stages.tokenize import Tokenize


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    rng = random.Random(0)
    return str(train_bpe((article(rng) for _ in range(300)), 1000, tmp_path_factory.mktemp("tok") / "bpe"))


def test_trained_byte_level_bpe_round_trips_any_text(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.get_vocab_size() == 1000
    for text in ["Plain words.", "Ünïcödé, emoji 🙂 and tabs\t\nnew lines", "日本語のテキスト"]:
        assert tok.decode(tok.encode(text).ids) == text


def test_smallest_dtype():
    assert token_dtype(200) == np.uint8 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_eos_bos_and_counts(tokenizer_dir):
    texts = ["Our team gently water the tomato plants.", "A second, longer document about raised beds."]
    result = Tokenize(TokenizeConfig(name="tokenize", tokenizer=tokenizer_dir, bos_token="<|startoftext|>")).apply(
        documents(texts))
    tok = load_tokenizer(tokenizer_dir)
    ids = result.kept.column("input_ids").to_pylist()
    assert result.kept.schema.field("input_ids").type == pa.large_list(pa.uint16())
    for text, doc in zip(texts, ids, strict=True):
        assert doc[0] == tok.token_to_id("<|startoftext|>") and doc[-1] == tok.token_to_id(EOS)
        assert tok.decode(doc[1:-1]) == text
    assert result.kept.column("n_tokens").to_pylist() == [len(d) for d in ids]


@pytest.mark.parametrize("on_long", ["split", "truncate", "reject"])
def test_long_documents(tokenizer_dir, on_long):
    rng = random.Random(1)
    texts = [article(rng), "short one."]
    stage = Tokenize(TokenizeConfig(name="tokenize", tokenizer=tokenizer_dir, max_tokens=64, on_long=on_long))
    full = len(load_tokenizer(tokenizer_dir).encode(texts[0]).ids) + 1
    result = stage.apply(documents(texts))
    assert result.rows_in + result.rows_added == result.kept.num_rows + result.rejects.num_rows
    lengths = result.kept.column("n_tokens").to_pylist()
    assert max(lengths) <= 64
    if on_long == "split":
        parts = -(-full // 64)
        assert result.kept.column("id").to_pylist()[:parts] == [f"d0#{k}" for k in range(parts)]
        assert sum(lengths[:parts]) == full and result.rows_added == parts - 1
    elif on_long == "truncate":
        assert lengths == [64, lengths[1]] and result.rows_added == 0
    else:
        assert result.rejects.column("reject_reason").to_pylist() == ["too_many_tokens"]
        assert result.kept.column("id").to_pylist() == ["d1"]
