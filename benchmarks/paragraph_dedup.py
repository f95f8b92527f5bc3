"""`paragraph_dedup` vs Dolma's paragraph dedupe (Rust, a Bloom filter) and datatrove's SentenceDedup.

Corpus: --docs documents of 3-8 lines, each line 2-4 sentences drawn from the shared real web text
(C4, Dolma and Paloma samples); 20% of documents carry one of 60 boilerplate lines (cookie notices,
newsletter blurbs, disclaimers of 110-200 characters) and 5% repeat a line of an earlier document.
Units are lines for all three (winnow `unit: line`, Dolma's paragraph separator "\\n", datatrove
`split_sentences=False` with `n_sentences=1`), 2 workers each. Printed: wall time, docs/s, peak
memory (PSS of the process tree), units removed, and how the three sets of removed (document, line)
pairs compare.

    .venv/bin/python benchmarks/paragraph_dedup.py [--docs 200000] [--shards 8] [--dolma /tmp/dolma-venv/bin/dolma]

Dolma runs from its own virtual environment (`python -m venv V && V/bin/pip install dolma==1.2.1`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dedup_vs_datatrove import PeakRSS, real_texts  # (sibling benchmark modules)

SENTENCE = re.compile(r"(?<=[.!?])\s+")
BOILER_OPENERS = ["Cookie notice:", "Newsletter:", "Disclaimer:", "Related posts:", "Advertisement:", "Subscribe:"]


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    sentences = [s for t in real_texts() for s in SENTENCE.split(t) if 20 <= len(s) <= 300 and "\n" not in s]
    boiler = [f"{rng.choice(BOILER_OPENERS)} " + " ".join(rng.choices(sentences, k=2))[:180] + f" ({k})"
              for k in range(60)]
    ids, texts, lines_seen = [], [], []
    for i in range(n):
        lines = [" ".join(rng.choices(sentences, k=rng.randint(2, 4))) for _ in range(rng.randint(3, 8))]
        if rng.random() < 0.2:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(boiler))
        if lines_seen and rng.random() < 0.05:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines_seen))
        lines_seen.append(lines[0])
        ids.append(f"doc-{i:07d}")
        texts.append("\n".join(lines))
    return ids, texts, boiler


def write_inputs(work: Path, ids: list[str], texts: list[str], shards: int) -> list[Path]:
    (work / "parquet").mkdir(parents=True)
    (work / "dolma" / "documents").mkdir(parents=True)
    paths = []
    for s in range(shards):
        part_ids, part_texts = ids[s::shards], texts[s::shards]
        path = work / "parquet" / f"part-{s:05d}.parquet"
        pq.write_table(pa.table({"id": part_ids, "text": part_texts, "source": ["bench"] * len(part_ids),
                                 "url": pa.nulls(len(part_ids), pa.string()), "meta": pa.nulls(len(part_ids),
                                                                                                pa.string())}), path)
        paths.append(path)
        with gzip.open(work / "dolma" / "documents" / f"part-{s:05d}.jsonl.gz", "wt") as f:
            for doc_id, text in zip(part_ids, part_texts, strict=True):
                f.write(json.dumps({"id": doc_id, "text": text, "source": "bench"}) + "\n")
    return paths


def removed_lines(doc_text: dict[str, str], spans: dict[str, list[tuple[int, int]]]) -> set[tuple[str, str]]:
    return {(doc, doc_text[doc][a:b].strip("\n")) for doc, pairs in spans.items() for a, b in pairs}


PLAN_SECONDS: list[float] = []  # winnow's finding phase (map, shuffle, reduce), run in this driver
MIX_SECONDS: list[float] = []  # Dolma's `dolma mix` applying its spans


def run_winnow(paths: list[Path], work: Path) -> tuple[float, int, set[tuple[str, str]]]:
    import ray

    from support import run_stage
    from winnow.runtime import RuntimeOptions, Shard
    from winnow.stages.paragraph_dedup import ParagraphDedup, ParagraphDedupConfig
    from winnow.storage.fs import resolve

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    shards = [Shard(p.stem, resolve(str(p))) for p in paths]
    stage = ParagraphDedup(ParagraphDedupConfig(unit="line", normalize="none", min_words=0, max_removed_fraction=1))
    plan = type(stage).plan

    def timed_plan(self, ctx):
        started = time.perf_counter()
        try:
            return plan(self, ctx)
        finally:
            PLAN_SECONDS.append(time.perf_counter() - started)

    type(stage).plan = timed_plan
    with PeakRSS() as rss:
        started = time.perf_counter()
        run_stage(stage, shards, resolve(str(work / "winnow")), "bench", RuntimeOptions(run_id="bench", progress=False))
        seconds = time.perf_counter() - started
    ray.shutdown()
    removed = set()
    for path in sorted((work / "winnow").glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", "dup_removed"])
        for doc, cuts in zip(table["id"].to_pylist(), table["dup_removed"].to_pylist(), strict=True):
            removed |= {(doc, cut["text"].strip("\n")) for cut in cuts or []}
    return seconds, rss.peak, removed


def run_dolma(dolma: str, work: Path, docs: int, doc_text: dict[str, str]) -> tuple[float, int, set]:
    command = [dolma, "dedupe", "--documents", str(work / "dolma" / "documents" / "*.jsonl.gz"),
               "--dedupe.name", "bench", "--dedupe.paragraphs.attribute_name", "dup_paragraphs",
               "--dedupe.min_length", "100", "--dedupe.skip_empty",
               "--bloom_filter.file", str(work / "dolma" / "bloom.bin"), "--no-bloom_filter.read_only",
               "--bloom_filter.estimated_doc_count", str(docs * 8), "--bloom_filter.desired_false_positive_rate",
               "1e-6", "--processes", "2"]
    with PeakRSS() as rss:
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    # `dolma mix` cuts the spans out of the documents (what winnow's apply phase does), timed apart
    mix = {"streams": [{"name": "bench", "documents": [str(work / "dolma" / "documents" / "*.jsonl.gz")],
                        "attributes": ["bench"], "output": {"path": str(work / "dolma" / "mixed"),
                                                            "max_size_in_bytes": 1 << 30},
                        "span_replacement": [{"span": "$.attributes.dup_paragraphs", "min_score": 0.5,
                                              "replacement": ""}]}], "processes": 2}
    (work / "dolma" / "mix.json").write_text(json.dumps(mix))
    started = time.perf_counter()
    subprocess.run([dolma, "-c", str(work / "dolma" / "mix.json"), "mix"], check=True, capture_output=True, text=True)
    MIX_SECONDS.append(time.perf_counter() - started)
    mixed = 0
    for path in (work / "dolma" / "mixed").glob("*.gz"):
        with gzip.open(path, "rt") as f:
            mixed += sum(len(json.loads(line)["text"]) for line in f)
    MIX_SECONDS.append(mixed)  # characters left after mixing (a check that it cut what dedupe found)
    spans: dict[str, list[tuple[int, int]]] = {}
    for path in (work / "dolma" / "attributes" / "bench").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            for line in f:
                row = json.loads(line)
                pairs = row["attributes"].get("dup_paragraphs") or []
                if pairs:
                    spans[row["id"]] = [(int(a), int(b)) for a, b, _ in pairs]
    return seconds, rss.peak, removed_lines(doc_text, spans)


def run_datatrove(work: Path, shards: int) -> tuple[float, int, set]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.sentence_dedup import (
        SentDedupConfig,
        SentenceDedupFilter,
        SentenceDedupSignature,
        SentenceFindDedups,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # SHA-1 hashes: datatrove's xxhash default rejects str with xxhash >= 3.5 (as in dedup_vs_datatrove.py)
    config = SentDedupConfig(n_sentences=1, split_sentences=False, min_doc_words=0, min_num_sentences=0,
                             hash_config=HashConfig(hash_fc="sha1", precision=64))
    folder = work / "parquet"

    def reader():
        return ParquetReader(str(folder), text_key="text", id_key="id", glob_pattern="*.parquet")

    steps = [
        LocalPipelineExecutor([reader(), SentenceDedupSignature(output_folder=str(work / "dt" / "sigs"),
                                                                config=config, finder_workers=2)],
                              tasks=shards, workers=2, logging_dir=str(work / "dt" / "l1")),
        LocalPipelineExecutor([SentenceFindDedups(data_folder=str(work / "dt" / "sigs"),
                                                  output_folder=str(work / "dt" / "dups"), config=config)],
                              tasks=2, workers=2, logging_dir=str(work / "dt" / "l2")),
        LocalPipelineExecutor([reader(), SentenceDedupFilter(data_folder=str(work / "dt" / "dups"), config=config),
                               JsonlWriter(str(work / "dt" / "out"))],
                              tasks=shards, workers=2, logging_dir=str(work / "dt" / "l3")),
    ]
    with PeakRSS() as rss:
        started = time.perf_counter()
        for step in steps:
            step.run()
        seconds = time.perf_counter() - started
    kept_lines = set()
    for path in (work / "dt" / "out").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            for line in f:
                row = json.loads(line)
                kept_lines |= {(row["id"], x) for x in row["text"].split("\n")}
    return seconds, rss.peak, kept_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--dolma", default="/tmp/dolma-venv/bin/dolma")
    parser.add_argument("--skip-datatrove", action="store_true")
    args = parser.parse_args()

    ids, texts, boiler = corpus(args.docs)
    doc_text = dict(zip(ids, texts, strict=True))
    all_lines = {(d, x) for d, t in doc_text.items() for x in t.split("\n")}
    work = Path(tempfile.mkdtemp(prefix="paragraph-bench-"))
    try:
        paths = write_inputs(work, ids, texts, args.shards)
        results = {"winnow (Ray, 2 CPUs)": run_winnow(paths, work)}
        if Path(args.dolma).exists():
            results["Dolma dedupe (2 processes)"] = run_dolma(args.dolma, work, args.docs, doc_text)
        if not args.skip_datatrove:
            seconds, peak, kept_lines = run_datatrove(work, args.shards)
            removed = {u for u in all_lines if u not in kept_lines and len(u[1]) >= 100}
            results["datatrove SentenceDedup (2 workers)"] = (seconds, peak, removed)
        print(f"{args.docs:,} documents, {len(all_lines):,} lines; units: lines, at least 100 characters\n")
        print(f"{'method':<38}{'wall s':>8}{'docs/s':>10}{'peak MiB':>10}{'lines removed':>15}")
        for name, (seconds, peak, removed) in results.items():
            print(f"{name:<38}{seconds:>8.1f}{args.docs / seconds:>10,.0f}{peak / 2**20:>10,.0f}{len(removed):>15,}")
        base = results["winnow (Ray, 2 CPUs)"]
        print(f"winnow's time: {PLAN_SECONDS[0]:.1f} s finding the repeats (units split and hashed as the shards "
              f"are read, shuffled, reduced), {base[0] - PLAN_SECONDS[0]:.1f} s cutting them and writing every "
              "document again (Dolma's dedupe only finds: it writes span attributes, and `dolma mix` applies them)")
        if MIX_SECONDS:
            dedupe, mix = results["Dolma dedupe (2 processes)"][0], MIX_SECONDS[0]
            cut = sum(map(len, texts)) - MIX_SECONDS[1]
            print(f"Dolma's `dolma mix` cutting its spans: {mix:.1f} s ({cut:,} characters cut); dedupe + mix "
                  f"{dedupe + mix:.1f} s: winnow's whole stage {(dedupe + mix) / base[0]:.2f}x its docs/s; "
                  f"winnow's finding {dedupe / PLAN_SECONDS[0]:.2f}x dedupe's")
        for name, (seconds, _, removed) in list(results.items())[1:]:
            same_units = Counter(line for _, line in removed) == Counter(line for _, line in base[2])
            print(f"\n{name}: the same lines removed as winnow, counted by text: {same_units} "
                  "(which copy of a line stays can differ: winnow keeps the first in input order)")
            print(f"\nwinnow vs {name}: {seconds / base[0]:.2f}x its docs/s; removed by both "
                  f"{len(removed & base[2]):,}, by winnow only {len(base[2] - removed):,}, "
                  f"by it only {len(removed - base[2]):,}")
            for doc, line in sorted(removed ^ base[2])[:3]:
                print(f"  {'winnow only' if (doc, line) in base[2] else 'it only'}: {doc}: {line[:90]!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
