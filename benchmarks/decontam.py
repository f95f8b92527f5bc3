"""Decontamination throughput on one core: winnow's `decontaminate` vs datatrove's n-gram filter.

Both index every item of every shared llm-foundry benchmark file (about 25,000 items; an item's
text is its context and gold answer) as word 13-grams, then check the same documents (the shared C4
samples repeated to --docs) and drop those sharing an n-gram with an item. datatrove's index is made
by its own `NGramsDecontIndexer.compute_hashes` (its `run` fetches tasks through lighteval, which
needs the network) and written in its file format; its `NGramsDecontFilter` then runs as in a
pipeline. Printed: index build time and memory in the process that filters (winnow's arrays;
datatrove's dict), docs/s of each, the ratio, and documents dropped.

    .venv/bin/python benchmarks/decontam.py [--docs 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import SHARED, c4_texts  # noqa: E402 - the benchmarks' text, real or generated

BENCHMARKS = SHARED / "reference" / "llmfoundry_eval_local_data"


def winnow(texts: list[str]) -> tuple[float, float, int, int]:
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.stages.decontaminate import Decontaminate, DecontaminateConfig

    start = time.perf_counter()
    sources = [{"path": str(p)} for p in sorted(BENCHMARKS.glob("*.jsonl"))]
    stage = Decontaminate(DecontaminateConfig(name="decontaminate", benchmarks=sources))
    built = time.perf_counter() - start
    index = stage.index
    tables = [pa.Table.from_pylist([{"id": str(i + j), "text": t, "source": "c4"} for j, t in
                                    enumerate(texts[i:i + 1000])], schema=DOCUMENT_SCHEMA)
              for i in range(0, len(texts), 1000)]
    start = time.perf_counter()
    dropped = sum(stage.apply(table).rejects.num_rows for table in tables)
    return built, time.perf_counter() - start, dropped, index.hashes.nbytes + index.item_of.nbytes


def datatrove(texts: list[str], folder: Path) -> tuple[float, float, int, int]:
    from datatrove.data import Document
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.pipeline.decont.n_grams import NGramsDecontIndexer
    from datatrove.utils.hashing import HashConfig, create_hash_func
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from winnow.scorers.data import read_benchmark_texts

    # datatrove's default xxhash path passes str to xxhash, which current xxhash refuses; its SHA-1 works
    config = NGramsDecontConfig(n_grams=13, hash_config=HashConfig(precision=64, hash_fc="sha1"))
    start = time.perf_counter()
    indexer = SimpleNamespace(config=config, tokenizer=load_word_tokenizer("en"),
                              hash_func=create_hash_func(config.hash_config))
    hashes: set[int] = set()
    for item in read_benchmark_texts(sorted(BENCHMARKS.glob("*.jsonl"))):
        hashes.update(NGramsDecontIndexer.compute_hashes(indexer, item))
    array = np.array(sorted(hashes), dtype=config.hash_config.np_descr)
    array.tofile(folder / "all.index.hashes")
    built = time.perf_counter() - start
    step = NGramsDecontFilter(index_folder=str(folder), config=config)
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    start = time.perf_counter()
    kept = sum(1 for _ in step.run(iter(docs)))
    seconds = time.perf_counter() - start
    index = step._index_hashes  # its index in memory: a dict of Python ints to the task name
    size = sys.getsizeof(index) + sum(sys.getsizeof(h) for h in index)
    return built, seconds, len(texts) - kept, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args()
    if not BENCHMARKS.is_dir():
        sys.exit(f"needs the shared benchmark files under {BENCHMARKS}")
    base = c4_texts()
    texts = (base * (args.docs // len(base) + 1))[: args.docs]
    print(f"{len(texts):,} documents ({sum(map(len, texts)) / 1e6:.0f} M characters), "
          f"{len(list(BENCHMARKS.glob('*.jsonl')))} benchmark files, word 13-grams, one core")
    w_built, w_run, w_dropped, w_bytes = winnow(texts)
    with tempfile.TemporaryDirectory() as folder:
        d_built, d_run, d_dropped, d_bytes = datatrove(texts, Path(folder))
    print(f"winnow:    index {w_built:5.1f} s, {w_bytes / 2**20:5.1f} MiB; {len(texts) / w_run:8,.0f} docs/s; "
          f"dropped {w_dropped:,}")
    print(f"datatrove: index {d_built:5.1f} s, {d_bytes / 2**20:5.1f} MiB (a dict of Python ints); "
          f"{len(texts) / d_run:8,.0f} docs/s; dropped {d_dropped:,}")
    print(f"winnow / datatrove: {d_run / w_run:.2f}x docs/s")


if __name__ == "__main__":
    main()
