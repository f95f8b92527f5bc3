"""The 8-stage pipeline end to end: winnow fused, winnow writing every stage, and datatrove, in one run.

ingest -> heuristics -> exact_dedup -> dedup -> quality -> toxicity -> tokenize -> pack over real web
text (the shared web samples plus edited copies, as in the dedup benchmark) written as jsonl.gz
shards, 2 workers each:

  (a) winnow, fused segments (the default): ingest+heuristics | exact_dedup+dedup+quality+toxicity+
      tokenize | pack, exact_dedup's hashes computed while the first segment writes;
  (b) winnow with `checkpoint: true` on every stage: each stage writes its documents, as before
      segments existed;
  (c) datatrove's equivalent: JsonlReader -> Gopher repetition, Gopher quality, C4 and FineWeb
      filters -> JsonlWriter; its four MinHash steps (5-grams, 14 bands x 8 rows, as winnow);
      MinhashDedupFilter -> the same fastText quality and toxicity models -> DocumentTokenizer with
      the same tokenizer. datatrove's filters take milliseconds per document, so it runs on the first
      --datatrove-docs documents, and (a) runs again on exactly those for the comparison.

Prints docs/s end to end, bytes written (every file the run leaves: documents, rejects,
intermediates and training sequences; and the documents' own columns alone) and bytes read
(read() calls of the whole process tree, libraries and models included) per input byte, peak
memory (PSS summed over the process tree), and the overlap of the kept sets.

    .venv/bin/python benchmarks/pipeline.py [--docs 200000] [--shards 16] [--datatrove-docs 20000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_vs_datatrove import SHARED, PeakRSS, real_texts  # noqa: E402 - the dedup benchmark's corpus and meter

REFERENCE = SHARED.parent / "reference"
TOXIC = SHARED.parent / "toxicity" / "davidson_hate_offensive" / "labeled_data.csv"
QUALITY_THRESHOLD, TOXICITY_THRESHOLD = 0.05, 0.9
TOKEN_COLUMNS = ("input_ids", "n_tokens")


def write_corpus(directory: Path, ids: list[str], texts: list[str], shards: int) -> int:
    """jsonl.gz shards (documents shuffled so copies spread over all of them); returns their bytes."""
    directory.mkdir(parents=True)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    for s in range(shards):
        lines = [json.dumps({"id": ids[i], "text": texts[i]}) for i in order[s::shards]]
        with gzip.open(directory / f"part-{s:05d}.jsonl.gz", "wt", compresslevel=6) as f:
            f.write("\n".join(lines) + "\n")
    return sum(p.stat().st_size for p in directory.iterdir())


def train_models(work: Path, web: list[str]) -> dict[str, str]:
    """A fastText quality model (Wikipedia and books vs web), a fastText toxicity model (Davidson et al.
    tweets), and a BPE tokenizer, all trained here by winnow."""
    from winnow.scorers.fasttext import FastTextParams, train
    from winnow.scorers.tokenizer import train_bpe

    params = FastTextParams(dim=32, bucket=200_000, epoch=5)
    wiki = [p.strip() for p in (REFERENCE / "wikitext2_valid_test" / "wiki.valid.tokens.txt").read_text().split("\n\n")
            if len(p.split()) > 40]
    sample = random.Random(1).sample(web, min(len(web), 2 * len(wiki)))
    train(wiki + sample, ["hq"] * len(wiki) + ["cc"] * len(sample), work / "quality.bin", params, positive="hq")
    rows = list(csv.DictReader(open(TOXIC, encoding="utf-8")))
    train([r["tweet"] for r in rows], ["toxic" if r["class"] != "2" else "clean" for r in rows],
          work / "toxicity.bin", params, positive="toxic")
    train_bpe(web[:3000], 8000, work / "tokenizer")
    return {"quality": str(work / "quality.bin"), "toxicity": str(work / "toxicity.bin"),
            "tokenizer": str(work / "tokenizer")}


def winnow_config(corpus: Path, out: Path, models: dict, checkpoint: bool, overrides: dict) -> dict:
    stages = [
        {"name": "ingest"}, {"name": "heuristics"}, {"name": "exact_dedup"}, {"name": "dedup"},
        {"name": "quality", "scorer": {"kind": "fasttext", "model": models["quality"]}, "threshold": QUALITY_THRESHOLD},
        {"name": "toxicity", "scorer": {"kind": "fasttext", "model": models["toxicity"]},
         "thresholds": {"toxic": TOXICITY_THRESHOLD}},
        {"name": "tokenize", "tokenizer": models["tokenizer"]},
        {"name": "pack", "strategy": "bfd", "seq_len": 2048, "ranks": 2},
    ]
    return {"input": {"uri": str(corpus), "id_field": "id"}, "output": str(out),
            "stages": [{**s, **overrides.get(s["name"], {}), "checkpoint": checkpoint} for s in stages],
            "runtime": {"batch_size": 1024, "progress": False}}


def run_winnow(corpus: Path, out: Path, models: dict, checkpoint: bool, overrides: dict | None = None) -> dict:
    """`overrides`: stage name -> settings that replace the benchmark's."""
    from winnow.flows.curate import curate
    from winnow.storage.fs import resolve
    from winnow.storage.manifest import read_kept

    with PeakRSS() as meter:
        start = time.perf_counter()
        summary = curate(winnow_config(corpus, out, models, checkpoint, overrides or {}))
        seconds = time.perf_counter() - start
    kept = set(read_kept(resolve(str(out)), "pack", ["id"]).column("id").to_pylist())
    documents = sum(document_bytes(p) for p in out.glob("*/**/part-*.parquet"))  # kept documents and rejects
    return {"seconds": seconds, "docs": summary["stages"]["ingest"]["rows_in"], "kept": kept,
            "written": tree_bytes(out), "documents": documents, "read": meter.read, "peak": meter.peak}


def run_datatrove(corpus: Path, work: Path, models: dict, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FastTextClassifierFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # datatrove checks for the `fasttext-numpy2-wheel` distribution; winnow installs `fasttext-numpy2`, the same
    # fastText bindings under another name, so the check is told which module to look for
    FastTextClassifierFilter._requires_dependencies = [("fasttext", "fasttext-numpy2"), "fasteners"]
    # 64-bit SHA-1 shingle hashes: datatrove's xxhash default rejects str with xxhash >= 3.5
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                           hash_config=HashConfig(hash_fc="sha1", precision=64))
    tasks = len(list(corpus.iterdir()))
    filtered, out = work / "filtered", work / "out"

    def run(pipeline, n_tasks, name):
        # fork: the workers inherit the dependency check's setting below (forkserver would re-import datatrove)
        LocalPipelineExecutor(pipeline, tasks=n_tasks, workers=min(workers, n_tasks), start_method="fork",
                              logging_dir=str(work / "logs" / name)).run()

    with PeakRSS() as meter:
        start = time.perf_counter()
        run([JsonlReader(str(corpus), id_key="id"), GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(), FineWebQualityFilter(), JsonlWriter(str(filtered))], tasks, "filter")
        run([JsonlReader(str(filtered)), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
            tasks, "signatures")
        run([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                 config=config)], config.num_buckets, "buckets")
        run([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                 config=config)], 1, "cluster")
        run([JsonlReader(str(filtered)), MinhashDedupFilter(input_folder=str(work / "remove")),
             FastTextClassifierFilter(models["quality"], keep_labels=[("hq", QUALITY_THRESHOLD)],
                                      newline_replacement=" "),
             FastTextClassifierFilter(models["toxicity"], keep_labels=[("clean", 1 - TOXICITY_THRESHOLD)],
                                      newline_replacement=" "),
             JsonlWriter(str(out)),
             DocumentTokenizer(str(work / "tokens"), tokenizer_name_or_path=str(Path(models["tokenizer"]) /
                                                                                "tokenizer.json"),
                               eos_token="<|endoftext|>")], tasks, "final")
        seconds = time.perf_counter() - start
    kept = set()
    for path in out.glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            kept |= {json.loads(line)["id"] for line in f}
    documents = tree_bytes(filtered) + tree_bytes(out)  # datatrove writes no rejects by default
    return {"seconds": seconds, "kept": kept, "written": tree_bytes(work) - tree_bytes(work / "logs"),
            "documents": documents, "read": meter.read, "peak": meter.peak}


def document_bytes(path: Path) -> int:
    """Bytes of a Parquet file's document columns: everything but the token ids `tokenize` adds."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    return sum(rg.column(c).total_compressed_size for r in range(meta.num_row_groups) for rg in [meta.row_group(r)]
               for c in range(rg.num_columns) if rg.column(c).path_in_schema.split(".")[0] not in TOKEN_COLUMNS)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def report(results: dict, docs: int, input_bytes: int) -> None:
    """One row per run; written/in counts every file the run leaves (training sequences included), docs/in the
    documents' columns in document files, kept and rejects (not the token ids tokenize adds)."""
    print(f"{'run':<44}{'wall s':>8}{'docs/s':>9}{'written/in':>11}{'docs/in':>9}{'read/in':>9}{'peak MiB':>10}"
          f"{'kept':>8}")
    for name, r in results.items():
        print(f"{name:<44}{r['seconds']:>8.1f}{docs / r['seconds']:>9,.0f}{r['written'] / input_bytes:>11.2f}"
              f"{r['documents'] / input_bytes:>9.2f}{r['read'] / input_bytes:>9.2f}{r['peak'] / 2**20:>10,.0f}"
              f"{len(r['kept']):>8,}")


def overlap(a: set, b: set) -> str:
    return f"{len(a & b):,} in both, {len(a - b):,} only winnow, {len(b - a):,} only datatrove " \
           f"({len(a ^ b) / max(len(a | b), 1):.2%} of the union differ)"


def family_overlap(a: set, b: set) -> str:
    """The kept sets compared up to which member of a family (an original and its edited copies) survives:
    near-duplicate removal keeps one member per cluster, winnow the first in input order, datatrove its
    union-find root (union by size: the first of the cluster's first pair, unless clusters merge), so the
    same clusters can keep different members."""
    from collections import Counter

    from dedup_eval import family

    fa, fb = Counter(map(family, a)), Counter(map(family, b))
    differ = sum(((fa - fb) + (fb - fa)).values())
    return f"{differ:,} of {max(len(a), len(b)):,} kept documents differ ({differ / max(len(a), len(b), 1):.2%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--datatrove-docs", type=int, default=20_000, help="0: skip datatrove")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only-datatrove-comparison", action="store_true", help="skip (a) and (b) on --docs")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: corpora, models, "
                                                  "every run's output and manifests (per-stage seconds)")
    args = parser.parse_args()

    import ray

    from dedup_eval import edited_corpus

    ids, texts = edited_corpus(real_texts(), copies=args.docs, seed=0)
    ids, texts = ids[: args.docs], texts[: args.docs]
    if args.keep:
        args.keep.mkdir(parents=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        models = train_models(work / "models", [t for i, t in zip(ids, texts, strict=True) if i.startswith("orig")])
        input_bytes = write_corpus(work / "corpus", ids, texts, args.shards)
        print(f"{len(texts):,} documents ({sum(i.startswith('orig') for i in ids):,} real web documents + edited "
              f"copies) in {args.shards} jsonl.gz shards, {input_bytes / 2**20:,.1f} MiB; {args.workers} workers\n")
        ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        # warm up outside the timings: Prefect's local API starts on the first flow run, Ray's workers on
        # the first tasks
        warm = write_corpus(work / "warm", ids[:200], texts[:200], args.workers) and work / "warm"
        run_winnow(warm, work / "warm-out", models, checkpoint=False)
        if not args.only_datatrove_comparison:
            results = {"(a) winnow fused": run_winnow(work / "corpus", work / "fused", models, checkpoint=False),
                       "(b) winnow, checkpoint: true on every stage":
                           run_winnow(work / "corpus", work / "checkpoint", models, checkpoint=True)}
            report(results, len(texts), input_bytes)
            a, b = results["(a) winnow fused"], results["(b) winnow, checkpoint: true on every stage"]
            print(f"\nfused vs checkpoint-every-stage: {b['seconds'] / a['seconds']:.2f}x docs/s, "
                  f"{b['written'] / a['written']:.2f}x fewer bytes written; same kept set: {a['kept'] == b['kept']}")
        if args.datatrove_docs:
            n = min(args.datatrove_docs, len(texts))
            sub_bytes = write_corpus(work / "subset", ids[:n], texts[:n], args.shards)
            # dedup normalises text and computes signatures as datatrove does, so the same documents collide,
            # and keeps the first of a cluster in input order, as datatrove's union-find root mostly is
            first = {"keep": "first"}
            small = {"(a) winnow fused": run_winnow(work / "subset", work / "fused-subset", models, False, {
                "exact_dedup": first, "dedup": {"normalize": "datatrove", "hashing": "datatrove", **first}})}
            ray.shutdown()
            small["(c) datatrove"] = run_datatrove(work / "subset", work / "datatrove", models, args.workers)
            print(f"\non the first {n:,} documents ({sub_bytes / 2**20:,.1f} MiB):")
            report(small, n, sub_bytes)
            w, d = small["(a) winnow fused"], small["(c) datatrove"]
            print(f"\nwinnow / datatrove end-to-end docs/s: {d['seconds'] / w['seconds']:.1f}x")
            print(f"kept sets, by id: {overlap(w['kept'], d['kept'])}")
            print(f"kept sets, by family (which copy survives aside): {family_overlap(w['kept'], d['kept'])}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
