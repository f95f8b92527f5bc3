"""Scale check for `dedup`: 1M short documents on this machine, peak memory printed.

Generates --docs short web-like documents (2-4 generated sentences; 10% are edited copies of
earlier ones), writes them as Parquet shards, runs the dedup stage on local Ray with 2 CPUs, and
prints wall time, docs/s, near-duplicates removed and the peak PSS of the whole process tree.

    .venv/bin/python benchmarks/dedup_scale.py [--docs 1000000] [--shards 50] [--verify]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dedup_vs_datatrove import PeakRSS  # noqa: I001 - sibling benchmark module


def short_documents(n: int, seed: int = 0) -> list[str]:
    from dedup_eval import edit
    from winnow.flows.demo import TOPICS, _sentence

    rng = random.Random(seed)
    topics = sorted(TOPICS)
    docs: list[str] = []
    for _ in range(n):
        if docs and rng.random() < 0.1:
            docs.append(edit(rng.choice(docs), rng.choice(["insert", "delete", "swap"]), 0.03, rng))
        else:
            topic = rng.choice(topics)
            docs.append(" ".join(_sentence(rng, topic) for _ in range(rng.randint(2, 4))))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=50)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()

    import ray

    from support import run_stage
    from winnow.runtime import RuntimeOptions, Shard
    from winnow.schemas.documents import DOCUMENT_SCHEMA
    from winnow.stages.dedup import Dedup, DedupConfig
    from winnow.storage.fs import resolve

    work = Path(tempfile.mkdtemp(prefix="dedup-scale-"))
    try:
        started = time.perf_counter()
        shards = []
        per_shard = -(-args.docs // args.shards)
        for s in range(args.shards):
            texts = short_documents(min(per_shard, args.docs - s * per_shard), seed=s)
            n = len(texts)
            path = work / "in" / f"part-{s:05d}.parquet"
            path.parent.mkdir(exist_ok=True)
            pq.write_table(pa.table({"id": [f"s{s}-{i}" for i in range(n)], "text": texts, "source": ["gen"] * n,
                                     "url": [None] * n, "meta": [None] * n}, schema=DOCUMENT_SCHEMA),
                           path, row_group_size=4096)
            shards.append(Shard(path.stem, resolve(str(path))))
        print(f"generated {args.docs:,} documents in {args.shards} shards ({time.perf_counter() - started:.0f} s)")

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        with PeakRSS() as rss:
            start = time.perf_counter()
            manifest, _ = run_stage(Dedup(DedupConfig(name="dedup", verify=args.verify)), shards,
                                    resolve(str(work / "out")), "scale", RuntimeOptions(run_id="scale", progress=True))
            seconds = time.perf_counter() - start
        ray.shutdown()
        print(f"dedup ({args.cpus} Ray CPUs{', verify' if args.verify else ''}): {seconds:.0f} s, "
              f"{manifest.rows_in / seconds:,.0f} docs/s, {manifest.rows_rejected:,} near-duplicates removed, "
              f"peak PSS of all processes {rss.peak / 2**30:.2f} GiB")
        print({k: v for k, v in manifest.extra.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
