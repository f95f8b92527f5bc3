"""Daily increments into one run index: winnow's `index:` + `new_only` vs datatrove's MinHash index, per day.

Corpus: --days increments of --per-day documents. Each document is 4-14 sentences drawn from the shared
real web text (C4, Dolma and Paloma samples), so the vocabulary and sentence lengths are real web text
while documents stay distinct at scale; 8% of each day's documents are edited copies (insertions,
deletions, swaps of 2-5% of words) and 2% exact copies, half of them of an earlier day's document.

winnow: each day's files land in one input folder and `winnow run` reads only the new ones
(`input.new_only`): ingest -> exact_dedup -> dedup (keep: first), one `index:` for all days, local Ray
with 2 CPUs, started afresh for each day as a nightly run's process would be. Printed per day: wall time,
docs/s, index bytes read (compressed), peak memory (PSS of the process tree, Prefect's API server aside; and
of the Ray worker processes alone), documents removed and how many of them against earlier days; then the
index's bytes per kept document.

datatrove (same days, 2 workers, 14 buckets x 8 hashes, 5-grams): per day MinhashDedupSignature ->
MinhashDedupBuckets(index_folder=…, only_dedup_in_index=False) -> MinhashDedupCluster ->
MinhashDedupFilter, then MinhashBuildIndex adds the day's signatures to the index. Its matches against
the index carry no document (datatrove writes a sentinel for the index side), so the earlier document
cannot be named; winnow's rejects name it and its run.

    .venv/bin/python benchmarks/incremental.py [--days 10] [--per-day 20000] [--skip-datatrove]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dedup_vs_datatrove import PeakRSS, datatrove_minhash_config, real_texts  # (sibling benchmark modules)

from dedup_eval import edit

SENTENCE = re.compile(r"(?<=[.!?])\s+")


def daily_documents(days: int, per_day: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """(id, text) per day: sentence mixes of real web text, with edited and exact copies within and across days."""
    rng = random.Random(seed)
    sentences = [s for t in real_texts() for s in SENTENCE.split(t) if 20 <= len(s) <= 400]
    out: list[list[tuple[str, str]]] = []
    for day in range(days):
        docs: list[tuple[str, str]] = []
        for i in range(per_day):
            earlier = out[rng.randrange(day)] if day and rng.random() < 0.5 else docs
            roll = rng.random()
            if earlier and roll < 0.10:
                _, text = rng.choice(earlier)
                if roll >= 0.02:
                    text = edit(text, rng.choice(["insert", "delete", "swap"]), rng.uniform(0.02, 0.05), rng)
                docs.append((f"day{day:02d}-{i:06d}-copy", text))
            else:
                docs.append((f"day{day:02d}-{i:06d}", " ".join(rng.choices(sentences, k=rng.randint(4, 14)))))
        out.append(docs)
    return out


def write_day(folder: Path, day: int, docs: list[tuple[str, str]], files: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(files):
        part = docs[k::files]
        path = folder / f"day{day:02d}-{k}.parquet"
        pq.write_table(pa.table({"id": [i for i, _ in part], "text": [t for _, t in part]}), path)
        paths.append(path)
    return paths


def run_winnow(days: list[list[tuple[str, str]]], work: Path) -> tuple[list[dict], dict]:
    import ray

    from winnow.flows.curate import curate
    from winnow.storage.index import RunIndex

    config = {"input": {"uri": str(work / "crawl"), "id_field": "id", "new_only": True},
              "output": str(work / "runs" / "{run_id}"), "index": str(work / "index"),
              "stages": [{"name": "ingest"}, {"name": "exact_dedup", "keep": "first"},
                         {"name": "dedup", "keep": "first"}],
              "runtime": {"progress": False}}
    rows = []
    for day, docs in enumerate(days):
        write_day(work / "crawl", day, docs)
        # a nightly run starts its own Ray (started here outside the timing); Prefect's API server is not the run's
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        with PeakRSS(exclude="prefect.server.api", track="ray::") as rss:
            started = time.perf_counter()
            summary = curate(config)
            seconds = time.perf_counter() - started
        ray.shutdown()
        stages = summary["stages"]
        extra = {name: stages[name].get("extra", {}) for name in ("exact_dedup", "dedup")}
        rows.append({"day": day + 1, "seconds": seconds, "docs": len(docs), "peak": rss.peak,
                     "workers": rss.tracked_peak, "read": sum(e.get("index_bytes_read", 0) for e in extra.values()),
                     "earlier": sum(e.get("earlier_run_duplicates", 0) for e in extra.values()),
                     "kept": stages["dedup"]["rows_out"],
                     "removed": sum(stages[name]["rows_rejected"] for name in ("exact_dedup", "dedup"))})
    shown = RunIndex(str(work / "index")).describe()
    named = _a_cross_run_reject(Path(summary["output"]))
    return rows, {"bytes": shown["bytes"], "namespaces": shown["namespaces"], "example": named}


def _a_cross_run_reject(output: Path) -> str:
    for stage in ("dedup", "exact_dedup"):
        for path in sorted((output / stage / "rejects").glob("*.parquet")):
            table = pq.read_table(path, columns=["id", "reject_detail"])
            for doc_id, detail in zip(table["id"].to_pylist(), table["reject_detail"].to_pylist(), strict=True):
                if " from run " in (detail or ""):
                    return f"{stage}: {doc_id}: {detail}"
    return "(none)"


def run_datatrove(days: list[list[tuple[str, str]]], work: Path) -> list[dict]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashBuildIndex
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    config = datatrove_minhash_config()
    rows = []
    for day, docs in enumerate(days):
        folder, d = work / f"day{day:02d}", work / f"state{day:02d}"
        paths = write_day(folder, day, docs)

        def reader(folder=folder):
            return ParquetReader(str(folder), text_key="text", id_key="id", glob_pattern="*.parquet")

        def run(pipeline, tasks, name, workers=2, d=d):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(d / f"logs-{name}")).run()

        with PeakRSS() as rss:
            started = time.perf_counter()
            run([reader(), MinhashDedupSignature(output_folder=str(d / "sigs"), config=config)], len(paths), "sigs")
            run([MinhashDedupBuckets(input_folder=str(d / "sigs"), output_folder=str(d / "buckets"),
                                     index_folder=str(work / "index"), only_dedup_in_index=False, config=config)],
                config.num_buckets, "buckets")
            run([MinhashDedupCluster(input_folder=str(d / "buckets"), output_folder=str(d / "remove"), config=config)],
                1, "cluster", workers=1)
            run([reader(), MinhashDedupFilter(input_folder=str(d / "remove"),
                                              exclusion_writer=JsonlWriter(str(d / "removed"))),
                 JsonlWriter(str(d / "kept"))], len(paths), "filter")
            run([MinhashBuildIndex(input_folder=str(d / "sigs"), output_folder=str(work / "index"),
                                   index_name=f"day{day:02d}", config=config)], config.num_buckets, "index")
            seconds = time.perf_counter() - started
        index_matches = sum(1 for path in (d / "buckets").glob("*.dups")
                            for f1, _, _, _ in struct.iter_unpack("<4I", path.read_bytes()) if f1 == 0xFFFFFFFF)
        removed = 0
        for path in (d / "removed").glob("*.jsonl.gz"):
            with gzip.open(path, "rt") as f:
                removed += sum(1 for _ in f)
        rows.append({"day": day + 1, "seconds": seconds, "docs": len(docs), "peak": rss.peak,
                     "earlier": index_matches, "removed": removed})
    index_bytes = sum(p.stat().st_size for p in (work / "index").rglob("*") if p.is_file())
    rows[-1]["index_bytes"] = index_bytes
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--skip-datatrove", action="store_true")
    args = parser.parse_args()

    days = daily_documents(args.days, args.per_day)
    work = Path(tempfile.mkdtemp(prefix="incremental-bench-"))
    try:
        winnow, index = run_winnow(days, work / "winnow")
        print(f"{args.days} daily increments of {args.per_day:,} documents (sentence mixes of real web text, 8% "
              f"edited and 2% exact copies, half of them across days)\n")
        print("winnow: ingest -> exact_dedup -> dedup against one run index (new_only), local Ray, 2 CPUs")
        print(f"{'day':>4}{'wall s':>9}{'docs/s':>9}{'index MiB read':>16}{'peak MiB':>10}{'workers MiB':>13}"
              f"{'removed':>9}{'of them cross-run':>19}")
        for r in winnow:
            print(f"{r['day']:>4}{r['seconds']:>9.2f}{r['docs'] / r['seconds']:>9,.0f}{r['read'] / 2**20:>16.2f}"
                  f"{r['peak'] / 2**20:>10,.0f}{r['workers'] / 2**20:>13,.0f}{r['removed']:>9,}{r['earlier']:>19,}")
        kept = sum(r["kept"] for r in winnow)
        print(f"day {args.days} / day 2: time {winnow[-1]['seconds'] / winnow[1]['seconds']:.2f}x; peak memory of "
              f"the Ray workers (the run's work) {winnow[-1]['workers'] / winnow[1]['workers']:.2f}x; of everything "
              f"{winnow[-1]['peak'] / winnow[1]['peak']:.2f}x (this driver runs every day's flow in one process and "
              "grows by some 25 MiB a run, with or without an index; a nightly run's driver is a fresh process)")
        print(f"index: {index['bytes']:,} bytes for {kept:,} kept documents = {index['bytes'] / kept:.0f} bytes per "
              f"kept document (exact + MinHash keys, no verify)")
        for ns, shown in index["namespaces"].items():
            print(f"  {ns}: {shown['keys']:,} key rows in {shown['parts']} parts, {shown['documents']:,} documents")
        print(f"a cross-run drop names its earlier document: {index['example']}\n")
        if args.skip_datatrove:
            return
        datatrove = run_datatrove(days, work / "datatrove")
        print("datatrove: signature -> buckets(index_folder) -> cluster -> filter, then MinhashBuildIndex; 2 workers")
        print(f"{'day':>4}{'wall s':>9}{'docs/s':>9}{'peak MiB':>10}{'index band hits':>17}{'removed':>9}"
              f"{'winnow x':>10}")
        for r, w in zip(datatrove, winnow, strict=True):
            print(f"{r['day']:>4}{r['seconds']:>9.2f}{r['docs'] / r['seconds']:>9,.0f}{r['peak'] / 2**20:>10,.0f}"
                  f"{r['earlier']:>17,}{r['removed']:>9,}{r['seconds'] / w['seconds']:>10.1f}")
        total_dt, total_w = sum(r["seconds"] for r in datatrove), sum(r["seconds"] for r in winnow)
        print(f"winnow / datatrove time per increment (all days): {total_dt / total_w:.1f}x; datatrove's index: "
              f"{datatrove[-1]['index_bytes'] / sum(r['docs'] for r in datatrove):.0f} bytes per input document; "
              "its index matches name no earlier document (a sentinel stands for the index side)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
