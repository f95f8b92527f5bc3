"""Tokenizer training and the tokenize stage."""

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import documents
from winnow.flows.demo import article
from winnow.scorers.tokenizer import EOS, load_tokenizer, token_dtype, train_bpe
from winnow.stages.tokenize import Tokenize, TokenizeConfig


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    rng = random.Random(0)
    return str(train_bpe((article(rng) for _ in range(300)), 1000, tmp_path_factory.mktemp("tok") / "bpe"))


def test_trained_byte_level_bpe_round_trips_any_text(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.get_vocab_size() == 1000
    for text in ["Plain words.", "Ünïcödé, emoji 🙂 and tabs\t\nnew lines", "日本語のテキスト"]:
        assert tok.decode(tok.encode(text).ids) == text


def test_token_dtype_follows_megatron_core():
    # uint16 while every id fits, then int32 (Megatron's code 4; it has no uint32 code)
    assert token_dtype(200) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.int32 and token_dtype(151_936) == np.int32
    with pytest.raises(ValueError, match="int32"):
        token_dtype(2**31 + 1)


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


def word_level_tokenizer(path, vocab_size: int) -> list[str]:
    """A HF tokenizer directory whose vocabulary is `w0` .. `w<vocab_size - 2>` plus EOS (last id):
    token ids are known by hand, so a test can state what every document must become."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - 1)]
    model = models.WordLevel({**{w: i for i, w in enumerate(words)}, EOS: vocab_size - 1}, unk_token="w0")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS).save_pretrained(path)
    return words


@pytest.mark.usefixtures("ray_local", "prefect_api")
def test_vocabularies_over_65536_tokens_reach_megatron_files(tmp_path):
    """Item 1 of issue 13: a Llama-3-sized vocabulary (128,256 ids) through a run (tokenize + pack) writes
    int32 token ids that megatron-core's IndexedDataset reads back document for document."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset

    from winnow.flows.curate import curate

    vocab = 128_256
    word_level_tokenizer(tmp_path / "tok", vocab)
    rng = random.Random(0)
    docs = {f"doc{i}": [rng.choice([rng.randrange(vocab - 1), rng.randrange(65_000, vocab - 1)])
                        for _ in range(rng.randint(1, 40))] for i in range(30)}
    lines = [json.dumps({"id": d, "text": " ".join(f"w{t}" for t in ids)}) for d, ids in docs.items()]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text("\n".join(lines) + "\n")
    config = {"input": {"uri": str(tmp_path / "in"), "id_field": "id"}, "output": str(tmp_path / "out"),
              "runtime": {"num_cpus": 1, "progress": False},
              "stages": [{"name": "ingest"}, {"name": "tokenize", "tokenizer": str(tmp_path / "tok")},
                         {"name": "pack", "seq_len": 64}]}
    curate(config)

    tokens = pq.read_table(tmp_path / "out" / "tokenize")
    assert tokens.schema.field("input_ids").type.value_type == pa.int32()
    prefix = str(tmp_path / "out" / "tokens" / "megatron" / "rank-00000")
    dataset = IndexedDataset(prefix, mmap=True)
    assert dataset.index.dtype == np.int32 and DType.code_from_dtype(dataset.index.dtype) == 4
    read = sorted(tuple(dataset[i].tolist()) for i in range(len(dataset)))
    expected = sorted(tuple(ids + [vocab - 1]) for ids in docs.values())  # EOS ends every document
    assert read == expected and max(t for ids in docs.values() for t in ids) > 65_535
    assert dataset.document_indices.tolist() == list(range(len(docs) + 1))
