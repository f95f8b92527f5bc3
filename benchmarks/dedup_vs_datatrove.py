"""winnow's `dedup` vs datatrove's four MinHash steps and data-juicer's `document_minhash_deduplicator`, on
the same shards, in one run.

Corpus: documents none of which repeats another: the distinct real web documents of the shared data and
rewrites of them (`texts.unique_corpus`: a per-document word substitution, so no run of words recurs),
--copies of them then replaced by edited copies of a random one of them (insertions, deletions, swaps,
boilerplate, truncation at 0.5-20% of words): the near duplicates to find. Written as Parquet shards. All
use word 5-grams, 14 bands x 8 rows, 2 worker processes (datatrove: LocalPipelineExecutor with 2 workers;
data-juicer: its default executor with np 2, in its own virtual environment, `make bench-peers`; winnow:
local Ray with 2 CPUs, and again with 1 CPU for scaling). Prints wall time, docs/s, peak RSS of the whole
process tree, and precision/recall against brute-force exact Jaccard >= 0.8 on a sample of document
families (an original and its copies).

    make bench bench-peers
    .venv/bin/python benchmarks/dedup_vs_datatrove.py [--docs 200000] [--copies 0.3] [--shards 8]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "web"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from texts import unique_corpus  # noqa: E402 - the benchmarks' text


def real_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in open(SHARED / "c4_train_first1k" / "c4_sample.jsonl")]
    for path in [SHARED / "olmo_c4_sample_1k" / "c4-sample.00000-of-00001.json.gz",
                 *sorted((SHARED / "dolma_test_fixtures").glob("*.json*.gz")),
                 SHARED / "olmo_paloma_fixtures" / "c4_100_domains_5_www.theguardian.com_00000000.jsonl.gz"]:
        with gzip.open(path, "rt") as f:
            texts += [json.loads(line).get("text", "") for line in f]
    return [t for t in texts if t]


class PeakRSS:
    """Peak memory of this process and all its descendants, sampled every 0.1 s, and the bytes they
    read through read() calls (`read`, set on exit; a process that exits keeps its last sample).

    Uses each process's PSS (shared pages, e.g. Ray's object store, divided among the processes
    mapping them) so the sum does not count shared memory once per process.
    """

    def __init__(self, exclude: str | None = None, track: str | None = None, interval: float = 0.1):
        self.peak, self.read, self._reads, self._stop = 0, 0, {}, threading.Event()
        self.interval = interval  # reading every process's PSS takes CPU: a long run samples less often
        self.exclude = exclude  # processes whose command line contains this are not counted
        self.track, self.tracked_peak = track, 0  # also the peak of those whose command line contains `track`

    def _poll(self, pss: bool) -> tuple[int, dict]:
        """PSS summed over the process tree (when `pss`: the costly part), and each process's read bytes."""
        total, tracked, reads = 0, 0, {}
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                command = " ".join(proc.cmdline()) if self.exclude or self.track else ""
                if self.exclude and self.exclude in command:
                    continue
                with proc.oneshot():
                    pss_bytes = proc.memory_full_info().pss if pss else 0
                    reads[(proc.pid, proc.create_time())] = proc.io_counters().read_chars
                total += pss_bytes
                tracked += pss_bytes if self.track and self.track in command else 0
            except psutil.Error:
                pass
        self.tracked_peak = max(self.tracked_peak, tracked)
        return total, reads

    def _sample(self):
        while not self._stop.is_set():
            total, reads = self._poll(pss=True)
            self._reads.update(reads)
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._start = self._poll(pss=False)[1]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._reads.update(self._poll(pss=False)[1])
        self.read = sum(n - self._start.get(key, 0) for key, n in self._reads.items())


def write_shards(directory: Path, ids: list[str], texts: list[str], n_shards: int) -> list[Path]:
    from winnow.schemas.documents import DOCUMENT_SCHEMA

    directory.mkdir(parents=True)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)  # copies spread over all shards
    paths = []
    for s in range(n_shards):
        sel = order[s::n_shards]
        table = pa.table({"id": [ids[i] for i in sel], "text": [texts[i] for i in sel], "source": ["bench"] * len(sel),
                          "url": [None] * len(sel), "meta": [None] * len(sel)}, schema=DOCUMENT_SCHEMA)
        path = directory / f"part-{s:05d}.parquet"
        pq.write_table(table, path, row_group_size=2048)
        paths.append(path)
    return paths


def corpus(n: int, copy_share: float) -> tuple[list[str], list[str]]:
    """n documents: distinct ones (`orig-…`) and edited copies of them (`copy-…-of-…`)."""
    from dedup_eval import edited_corpus

    copies = int(n * copy_share)
    _, distinct = unique_corpus(n - copies)
    ids, texts = edited_corpus(distinct, copies=copies, seed=0, keep_short=True)
    return ids, texts


def run_winnow(paths: list[Path], out: Path, cpus: int) -> tuple[set[str], float, int]:
    import ray

    from support import run_stage
    from winnow.runtime import RuntimeOptions, Shard
    from winnow.stages.dedup import Dedup, DedupConfig
    from winnow.storage.fs import resolve

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    shards = [Shard(p.stem, resolve(str(p))) for p in paths]
    with PeakRSS() as rss:
        start = time.perf_counter()
        run_stage(Dedup(DedupConfig(name="dedup")), shards, resolve(str(out)), f"bench-{cpus}",
                  RuntimeOptions(run_id="bench", progress=False))
        seconds = time.perf_counter() - start
    ray.shutdown()
    removed = set(pq.read_table(out / "rejects", columns=["id"]).column("id").to_pylist())
    return removed, seconds, rss.peak


def datatrove_minhash_config():
    """datatrove's MinHash with winnow's default banding: 5-grams, 14 buckets x 8 hashes.

    64-bit SHA-1 shingle hashes: datatrove's xxhash default rejects str with xxhash >= 3.5 (it passes
    the shingle string unencoded), so its SHA-1 option is the one that runs here."""
    from datatrove.pipeline.dedup import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                         hash_config=HashConfig(hash_fc="sha1", precision=64))


def run_datatrove(paths: list[Path], work: Path, workers: int) -> tuple[set[str], float, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    config = datatrove_minhash_config()
    tasks = len(paths)

    def reader():
        return ParquetReader(str(paths[0].parent), text_key="text", id_key="id", glob_pattern="part-*.parquet")

    steps = [
        LocalPipelineExecutor([reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
                              tasks=tasks, workers=workers, logging_dir=str(work / "logs1")),
        LocalPipelineExecutor([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                                   config=config)],
                              tasks=config.num_buckets, workers=workers, logging_dir=str(work / "logs2")),
        LocalPipelineExecutor([MinhashDedupCluster(input_folder=str(work / "buckets"),
                                                   output_folder=str(work / "remove"), config=config)],
                              tasks=1, logging_dir=str(work / "logs3")),
        LocalPipelineExecutor([reader(), MinhashDedupFilter(input_folder=str(work / "remove"),
                                                            exclusion_writer=JsonlWriter(str(work / "removed"))),
                               JsonlWriter(str(work / "kept"))],
                              tasks=tasks, workers=workers, logging_dir=str(work / "logs4")),
    ]
    with PeakRSS() as rss:
        start = time.perf_counter()
        for step in steps:
            step.run()
        seconds = time.perf_counter() - start
    removed = set()
    for path in (work / "removed").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            removed |= {json.loads(line)["id"] for line in f}
    return removed, seconds, rss.peak


def run_data_juicer(paths: list[Path], work: Path, processes: int) -> tuple[set[str], float, int]:
    """data-juicer in its own venv (`.venv-peers/data-juicer`); seconds are its executor's, from loading the
    shards to exporting the kept documents (its Python start-up and imports not counted)."""
    from heuristics_vs_nemo import ROOT, peer_python

    python = peer_python(ROOT / ".venv-peers" / "data-juicer")
    out = work / "result.json"
    with PeakRSS() as rss:
        done = subprocess.run([str(python), str(Path(__file__).resolve().parent / "peers" / "dj_minhash.py"),
                               str(paths[0].parent), str(work / "job"), str(out), "--np", str(processes)],
                              capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"data-juicer failed:\n{done.stderr[-4000:]}")
    result = json.loads(out.read_text())
    ids = set(pq.read_table(paths[0].parent, columns=["id"]).column("id").to_pylist())
    return ids - set(result["kept"]), result["seconds"], rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--copies", type=float, default=0.3, help="share of the documents that are edited copies")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--sample-families", type=int, default=400, help="families scored against brute force")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--skip-data-juicer", action="store_true")
    args = parser.parse_args()

    from dedup_eval import brute_force_truth, family
    from winnow.stages.dedup import DedupConfig

    ids, texts = corpus(args.docs, args.copies)
    print(f"{len(texts):,} documents: {sum(i.startswith('orig') for i in ids):,} distinct (real web documents "
          f"and rewrites of them) + edited copies; {args.shards} shards; 5-grams, 14 bands x 8 rows\n")

    # Ground truth on a sample: whole families (an original and all its copies), all pairs.
    families = [family(i) for i in ids]
    chosen = set(random.Random(1).sample(sorted(set(families)), args.sample_families))
    sample = [k for k, f in enumerate(families) if f in chosen]
    truth = brute_force_truth([ids[k] for k in sample], [texts[k] for k in sample], DedupConfig(name="dedup"))
    sample_ids = [ids[k] for k in sample]
    print(f"ground truth: {len(sample):,} documents in {len(chosen)} families, "
          f"{sum(len(c) - 1 for c in truth.components):,} true removals at Jaccard >= 0.8\n")

    work = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    try:
        paths = write_shards(work / "shards", ids, texts, args.shards)
        results = {}
        for cpus in (2, 1):
            results[f"winnow ({cpus} Ray worker{'s' if cpus > 1 else ''})"] = run_winnow(paths, work / f"w{cpus}", cpus)
        if not args.skip_datatrove:
            results["datatrove (2 workers)"] = run_datatrove(paths, work / "dt", 2)
        if not args.skip_data_juicer:
            results["data-juicer (np 2)"] = run_data_juicer(paths, work / "dj", 2)
        print(f"{'method':<26}{'wall s':>9}{'docs/s':>10}{'peak RSS MiB':>14}{'removed':>10}{'precision':>11}"
              f"{'recall':>8}")
        for name, (removed, seconds, peak) in results.items():
            precision, recall = truth.score(sample_ids, removed & set(sample_ids))
            print(f"{name:<26}{seconds:>9.1f}{len(texts) / seconds:>10,.0f}{peak / 2**20:>14,.0f}"
                  f"{len(removed):>10,}{precision:>11.4f}{recall:>8.4f}")
        for peer in ("datatrove (2 workers)", "data-juicer (np 2)"):
            if peer in results:
                ratio = results[peer][1] / results["winnow (2 Ray workers)"][1]
                print(f"\nwinnow / {peer.split()[0]} end-to-end docs/s (2 processes each): {ratio:.1f}x")
        print(f"winnow scaling 1 -> 2 Ray workers: "
              f"{results['winnow (1 Ray worker)'][1] / results['winnow (2 Ray workers)'][1]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
