"""Tokenize and pack on the shared books and web text.

(a) tokenize stage tokens/s vs a bare `Tokenizer.encode_batch` loop on the same texts (overhead %);
(b) bfd at seq_len 2048 and 8192: padding share of slots, documents split vs concat, and packing
    speed (tokens placed per second by the packing algorithm);
(c) peak memory (PSS of all processes) of the pack stage on Ray for --pack-tokens tokens.

    .venv/bin/python benchmarks/tokenize_pack.py [--pack-tokens 100000000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dedup_vs_datatrove import PeakRSS  # noqa: I001 - sibling benchmark module

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def texts() -> list[str]:
    with gzip.open(SHARED / "reference/gutenberg_test_corpus/gutenberg_books.jsonl.gz", "rt") as f:
        books = [json.loads(line)["text"] for line in f]
    web = [json.loads(line)["text"] for line in open(SHARED / "web/c4_train_first1k/c4_sample.jsonl")]
    with gzip.open(SHARED / "web/olmo_c4_sample_1k/c4-sample.00000-of-00001.json.gz", "rt") as f:
        web += [json.loads(line)["text"] for line in f]
    return books + web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack-tokens", type=int, default=100_000_000)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()

    from support import run_stage
    from winnow.runtime import RuntimeOptions, Shard
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.scorers.tokenizer import load_tokenizer, train_bpe
    from winnow.stages.base import RunContext
    from winnow.stages.lib.packing import bfd, concat
    from winnow.stages.pack import Pack, PackConfig
    from winnow.stages.tokenize import Tokenize, TokenizeConfig
    from winnow.storage.fs import resolve

    corpus = texts()
    work = Path(tempfile.mkdtemp(prefix="tokpack-"))
    tok_dir = train_bpe(corpus[65:] + [b[:200_000] for b in corpus[:65]], args.vocab, work / "bpe")
    tokenizer = load_tokenizer(str(tok_dir))
    n = len(corpus)
    table = pa.table({"id": [str(i) for i in range(n)], "text": corpus, "source": ["b"] * n, "url": [None] * n,
                      "meta": [None] * n}, schema=DOCUMENT_SCHEMA)
    stage = Tokenize(TokenizeConfig(name="tokenize", tokenizer=str(tok_dir)))
    batches = [table.slice(i, 256) for i in range(0, n, 256)]
    best = {"bare": 1e9, "bare_fast": 1e9, "stage": 1e9}
    for _ in range(3):
        start = time.perf_counter()
        for b in batches:
            tokenizer.encode_batch(b.column("text").to_pylist(), add_special_tokens=False)
        best["bare"] = min(best["bare"], time.perf_counter() - start)
        start = time.perf_counter()
        for b in batches:  # what the stage calls: no character offsets computed
            tokenizer.encode_batch_fast(b.column("text").to_pylist(), add_special_tokens=False)
        best["bare_fast"] = min(best["bare_fast"], time.perf_counter() - start)
        start = time.perf_counter()
        results = [stage.apply(b) for b in batches]
        best["stage"] = min(best["stage"], time.perf_counter() - start)
    tokens = sum(r.kept.column("n_tokens").to_numpy().sum() for r in results)
    print(f"(a) tokenize {n:,} documents (65 books + 2,000 web), {tokens:,} tokens: bare encode_batch "
          f"{tokens / best['bare']:,.0f} tokens/s, tokenize stage {tokens / best['stage']:,.0f} tokens/s "
          f"-> overhead {100 * (best['stage'] / best['bare'] - 1):.1f}%; vs bare encode_batch_fast "
          f"{tokens / best['bare_fast']:,.0f} tokens/s "
          f"-> overhead {100 * (best['stage'] / best['bare_fast'] - 1):.1f}%")

    lengths = [int(x) for r in results for x in r.kept.column("n_tokens").to_numpy()]
    for seq_len in (2048, 8192):
        start = time.perf_counter()
        bins = bfd(lengths, seq_len)
        seconds = time.perf_counter() - start
        seqs = concat(lengths, seq_len)
        split = lambda s: sum(np.bincount([d for q in s for d, _, _ in q]) > 1)  # noqa: E731
        padding = 1 - sum(lengths) / (len(bins) * seq_len)
        print(f"(b) bfd seq_len {seq_len}: {len(bins):,} sequences, padding {padding:.3%} of slots, "
              f"documents split {split(bins):,} (concat: {split(seqs):,}), "
              f"packing {sum(lengths) / seconds / 1e6:.1f}M tokens/s")

    # (c) the pack stage on Ray over --pack-tokens tokens (the tokenized corpus replicated into shards)
    import ray

    shard_tokens = results
    reps = -(-args.pack_tokens // tokens)
    shards = []
    for s in range(8):
        parts = [r.kept for r in shard_tokens] * (-(-reps // 8))
        t = pa.concat_tables(parts)
        t = t.set_column(0, "id", pa.array([f"{s}-{i}" for i in range(t.num_rows)]))
        path = work / "in" / f"part-{s:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(t, path, row_group_size=1024)
        shards.append(Shard(path.stem, resolve(str(path))))
    total = sum(pq.read_metadata(s.source.path).num_rows for s in shards)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = resolve(str(work / "out"))
    with PeakRSS() as rss:
        start = time.perf_counter()
        manifest, _ = run_stage(Pack(PackConfig(strategy="bfd", seq_len=2048, ranks=2), RunContext(output=out)),
                                shards, out.join("pack"), "b",
                                RuntimeOptions(run_id="b", progress=False))
        seconds = time.perf_counter() - start
    ray.shutdown()
    summary = manifest.extra
    print(f"(c) pack stage (bfd 2048, 2 ranks on 2 Ray CPUs): {summary['tokens']:,} tokens in {total:,} documents, "
          f"{seconds:.0f} s, padding {summary['padding_fraction']:.3%}, peak PSS of all processes "
          f"{rss.peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
