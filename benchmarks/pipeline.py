"""The 8-stage pipeline end to end: winnow fused, winnow writing every stage, and datatrove, in one run, on
the same documents, with where each spends its time.

ingest -> heuristics -> exact_dedup -> dedup -> quality -> toxicity -> tokenize -> pack over web text
written as jsonl.gz shards, 2 workers each. The documents: the distinct real web documents of the shared
data and rewrites of them (`texts.unique_corpus`: a per-document word substitution, so no run of words
recurs and no cache is fed by repetition), --copies of them replaced by edited copies of others
(insertions, deletions, swaps, boilerplate, truncation) for the dedup stages to find, as in the dedup
benchmark.

  (a) winnow, fused segments (the default): ingest+heuristics | exact_dedup+dedup+quality+toxicity+
      tokenize | pack, exact_dedup's hashes computed while the first segment writes;
  (b) winnow with `checkpoint: true` on every stage: each stage writes its documents;
  (c) datatrove's equivalent: JsonlReader -> Gopher repetition, Gopher quality, C4 and FineWeb
      filters -> JsonlWriter; its four MinHash steps (5-grams, 14 bands x 8 rows, as winnow);
      MinhashDedupFilter -> the same fastText quality and toxicity models -> DocumentTokenizer with
      the same tokenizer.
winnow's dedup stages normalise and hash as datatrove's and keep the first document of a cluster, so the
same documents collide and the kept sets compare.

Prints docs/s end to end, bytes written (every file the run leaves: documents, rejects, intermediates
and training sequences; and the documents' own columns alone) and bytes read (read() calls of the whole
process tree, libraries and models included) per input byte, peak memory (PSS summed over the process
tree, sampled each second: reading it takes CPU), the overlap of the kept sets, and where the time
goes: each stage's worker seconds (winnow: its shard ledgers, reading and writing included in the first
and last stage of a segment; datatrove: each block's own timer, summed over tasks), the driver's plans,
and what is in no stage (start-up, scheduling, idle workers).

    .venv/bin/python benchmarks/pipeline.py [--docs 200000] [--copies 0.1] [--shards 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_vs_datatrove import SHARED, PeakRSS, corpus  # noqa: E402 - the dedup benchmark's corpus and meter

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

    with PeakRSS(interval=1.0) as meter:
        start = time.perf_counter()
        summary = curate(winnow_config(corpus, out, models, checkpoint, overrides or {}))
        seconds = time.perf_counter() - start
    kept = set(read_kept(resolve(str(out)), "pack", ["id"]).column("id").to_pylist())
    documents = sum(document_bytes(p) for p in out.glob("*/**/part-*.parquet"))  # kept documents and rejects
    return {"seconds": seconds, "docs": summary["stages"]["ingest"]["rows_in"], "kept": kept,
            "written": tree_bytes(out), "documents": documents, "read": meter.read, "peak": meter.peak,
            "breakdown": winnow_breakdown(out, summary)}


def winnow_breakdown(out: Path, summary: dict) -> list[tuple[str, float, float]]:
    """(stage, worker seconds: its shard ledgers' own time summed, its plan's wall seconds: the map, shuffle
    and reduce of a global stage before its segment's tasks), per stage in order."""
    from winnow.storage.fs import resolve
    from winnow.storage.manifest import read_manifest

    rows = []
    for name in summary["stages"]:
        manifest = read_manifest(resolve(str(out)).join(name))
        rows.append((name, sum(e.seconds for e in manifest.shards), manifest.extra.get("plan_seconds", 0.0)))
    return rows


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

    steps: list[tuple[str, float]] = []

    def timed(pipeline, n_tasks, name):
        started = time.perf_counter()
        run(pipeline, n_tasks, name)
        steps.append((name, time.perf_counter() - started))

    with PeakRSS(interval=1.0) as meter:
        start = time.perf_counter()
        timed([JsonlReader(str(corpus), id_key="id"), GopherRepetitionFilter(), GopherQualityFilter(),
             C4QualityFilter(), FineWebQualityFilter(), JsonlWriter(str(filtered))], tasks, "filter")
        timed([JsonlReader(str(filtered)), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
            tasks, "signatures")
        timed([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                 config=config)], config.num_buckets, "buckets")
        timed([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                 config=config)], 1, "cluster")
        timed([JsonlReader(str(filtered)), MinhashDedupFilter(input_folder=str(work / "remove")),
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
            "documents": documents, "read": meter.read, "peak": meter.peak,
            "breakdown": datatrove_breakdown(work / "logs", steps)}


def datatrove_breakdown(logs: Path, steps: list[tuple[str, float]]) -> list[tuple[str, str, float, float]]:
    """(step, block, the block's own seconds summed over tasks, the step's wall seconds) from each step's
    merged `stats.json`."""
    rows = []
    for step, wall in steps:
        for block in json.loads((logs / step / "stats.json").read_text()):
            name = " ".join(re.sub(r"[^\x20-\x7e]", " ", block["name"]).replace(" - ", " ").split())  # no emoji
            rows.append((step, name, block["time_stats"]["total"], wall))
    return rows


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


def breakdown(results: dict, workers: int) -> None:
    """Where each run's time goes: worker seconds per stage (or datatrove block), the plans (each holding
    every worker), and what is in no stage: wall x workers minus the stages' time (start-up, scheduling,
    idle workers)."""
    for name, r in results.items():
        capacity = r["seconds"] * workers
        print(f"\n{name}: {r['seconds']:.1f} s wall x {workers} workers = {capacity:.1f} worker seconds")
        if name.startswith("(c)"):
            step_rows: dict[str, list] = {}
            for step, block, secs, wall in r["breakdown"]:
                step_rows.setdefault(step, [wall]).append((block, secs))
            staged = 0.0
            for step, (wall, *blocks) in step_rows.items():
                print(f"  step {step:<12} {wall:>8.1f} s wall")
                for block, secs in blocks:
                    print(f"    {block:<36}{secs:>9.1f} s  {secs / capacity:>6.1%}")
                    staged += secs
        else:
            staged = 0.0
            for stage, worker, plan in r["breakdown"]:
                # a plan (map, shuffle, reduce) holds every worker for its wall time
                plan_note = f"  + plan {plan:.1f} s wall x {workers} ({plan * workers / capacity:.1%})" if plan else ""
                print(f"  {stage:<38}{worker:>9.1f} s  {worker / capacity:>6.1%}{plan_note}")
                staged += worker + plan * workers
        print(f"  {'in no stage (start-up, scheduling, idle)':<38}{capacity - staged:>9.1f} s  "
              f"{(capacity - staged) / capacity:>6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--copies", type=float, default=0.1, help="share of the documents that are edited copies")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--skip-checkpoint", action="store_true", help="skip (b)")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: corpora, models, "
                                                  "every run's output and manifests")
    args = parser.parse_args()

    import ray

    ids, texts = corpus(args.docs, args.copies)
    if args.keep:
        args.keep.mkdir(parents=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        models = train_models(work / "models", [t for i, t in zip(ids, texts, strict=True) if i.startswith("orig")])
        input_bytes = write_corpus(work / "corpus", ids, texts, args.shards)
        print(f"{len(texts):,} documents ({sum(i.startswith('orig') for i in ids):,} distinct: real web documents "
              f"and rewrites of them; the rest edited copies) in {args.shards} jsonl.gz shards, "
              f"{input_bytes / 2**20:,.1f} MiB; {args.workers} workers\n", flush=True)
        ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        # warm up outside the timings: Prefect's local API starts on the first flow run, Ray's workers on
        # the first tasks
        warm = write_corpus(work / "warm", ids[:200], texts[:200], args.workers) and work / "warm"
        run_winnow(warm, work / "warm-out", models, checkpoint=False)
        # dedup normalises text and computes signatures as datatrove does, so the same documents collide,
        # and keeps the first of a cluster in input order, as datatrove's union-find root mostly is
        first = {"keep": "first"}
        like_datatrove = {"exact_dedup": first, "dedup": {"normalize": "datatrove", "hashing": "datatrove", **first}}
        results = {"(a) winnow fused": run_winnow(work / "corpus", work / "fused", models, False, like_datatrove)}
        if not args.skip_checkpoint:
            results["(b) winnow, checkpoint: true on every stage"] = run_winnow(
                work / "corpus", work / "checkpoint", models, True, like_datatrove)
        ray.shutdown()
        if not args.skip_datatrove:
            results["(c) datatrove"] = run_datatrove(work / "corpus", work / "datatrove", models, args.workers)
        report(results, len(texts), input_bytes)
        a = results["(a) winnow fused"]
        if "(b) winnow, checkpoint: true on every stage" in results:
            b = results["(b) winnow, checkpoint: true on every stage"]
            print(f"\nfused vs checkpoint-every-stage: {b['seconds'] / a['seconds']:.2f}x docs/s, "
                  f"{b['written'] / a['written']:.2f}x fewer bytes written; same kept set: {a['kept'] == b['kept']}")
        if "(c) datatrove" in results:
            d = results["(c) datatrove"]
            print(f"\nwinnow / datatrove end-to-end docs/s: {d['seconds'] / a['seconds']:.1f}x")
            print(f"kept sets, by id: {overlap(a['kept'], d['kept'])}")
            print(f"kept sets, by family (which copy survives aside): {family_overlap(a['kept'], d['kept'])}")
        breakdown(results, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
