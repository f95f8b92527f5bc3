"""The pack stage end to end on Ray: Megatron files and packed Parquet sequences."""

import json
import random

import pyarrow.parquet as pq
import pytest

from conftest import documents
from support import run_stage
from winnow.flows.demo import article
from winnow.runtime import RuntimeOptions, Shard
from winnow.scorers.tokenizer import train_bpe
from winnow.stages.base import RunContext
from winnow.stages.pack import Pack, PackConfig
from winnow.stages.tokenize import Tokenize, TokenizeConfig
from winnow.storage.fs import resolve
from winnow.storage.megatron import read_sequences

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack")
    rng = random.Random(0)
    texts = [article(rng)[: rng.randint(20, 3000)] for _ in range(240)]
    tok = train_bpe(texts, 800, root / "bpe")
    stage = Tokenize(TokenizeConfig(name="tokenize", tokenizer=str(tok)))
    shards, docs = [], {}
    for s in range(4):
        result = stage.apply(documents(texts[s::4], [f"s{s}-{i}" for i in range(len(texts[s::4]))]))
        path = root / "tok" / f"part-{s:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(result.kept, path)
        shards.append(Shard(path.stem, resolve(str(path))))
        docs.update(zip(result.kept.column("id").to_pylist(), result.kept.column("input_ids").to_pylist(),
                        strict=True))
    return root, shards, docs


def run_pack(root, shards, name, **cfg):
    out = resolve(str(root / name))
    manifest, _ = run_stage(Pack(PackConfig(**cfg), RunContext(output=out)), shards, out.join("pack"),
                            name, RuntimeOptions(run_id="t", progress=False))
    return manifest, root / name / "tokens"


@pytest.mark.parametrize("strategy", ["concat", "bfd"])
def test_packed_sequences_keep_every_token(tokenized, strategy):
    root, shards, docs = tokenized
    manifest, tokens = run_pack(root, shards, strategy, strategy=strategy, seq_len=256, ranks=2)
    assert manifest.rows_in == manifest.rows_out == len(docs)  # the documents pass through
    summary = json.loads((tokens / "summary.json").read_text())
    all_tokens = sum(len(d) for d in docs.values())
    assert summary["tokens"] == all_tokens and summary["tokens_dropped"] == 0
    total = 0
    for rank in range(2):
        table = pq.read_table(tokens / strategy / f"rank-{rank:05d}.parquet")
        for ids, pos, mask, cu in zip(*(table.column(c).to_pylist() for c in
                                        ["input_ids", "position_ids", "loss_mask", "cu_seqlens"]), strict=True):
            assert len(ids) == len(pos) == len(mask) == 256
            used = cu[-1]
            assert sum(mask) == used and all(m == 0 for m in mask[used:])
            for a, b in zip(cu, cu[1:], strict=False):  # positions restart exactly at each piece
                assert pos[a:b] == list(range(b - a))
            total += used
    assert total == all_tokens
    assert abs(summary["padding_fraction"] - (1 - all_tokens / summary["slots"])) < 1e-9
    if strategy == "bfd":
        concat_summary = json.loads((run_pack(root, shards, "c2", strategy="concat", seq_len=256)[1]
                                     / "summary.json").read_text())
        assert summary["documents_split"] <= concat_summary["documents_split"]


def test_megatron_files_hold_every_document(tokenized):
    root, shards, docs = tokenized
    _, tokens = run_pack(root, shards, "meg", strategy="bfd", seq_len=128, ranks=2)
    sequences = [seq.tolist() for r in range(2) for seq in read_sequences(tokens / "megatron" / f"rank-{r:05d}")]
    assert sorted(map(tuple, sequences)) == sorted(map(tuple, docs.values()))


def test_decompose_buckets(tokenized):
    root, shards, docs = tokenized
    for name, piece, extra in [("dd", "targets", 1), ("dd-tokens", "tokens", 0)]:
        _, tokens = run_pack(root, shards, name, strategy="decompose", min_log2=4, max_log2=8, piece=piece,
                             overflow="longest")
        summary = json.loads((tokens / "summary.json").read_text())
        for size, count in summary["buckets"].items():
            table = pq.read_table(tokens / "decompose" / f"len-{int(size):05d}")
            assert table.num_rows == count
            assert set(map(len, table.column("input_ids").to_pylist())) == {int(size) + extra}
        assert summary["tokens"] - summary["tokens_dropped"] == summary["slots"]  # pieces are never padded
    assert summary["tokens_dropped"] == sum(len(d) % 16 for d in docs.values())  # 2^k ids: only tails < 16

