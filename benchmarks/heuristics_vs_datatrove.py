"""winnow's heuristics vs datatrove's Gopher/C4/FineWeb filters on the same real documents.

Prints, per ruleset: docs/s per core for winnow and datatrove (one process each, same docs),
the speed ratio, and the keep/drop agreement with examples of disagreement. Then the peak RSS
of a worker processing a 10k-doc and a 100k-doc shard (it must not grow with shard size).

    make bench   # installs datatrove + spacy (the `bench` extra)
    .venv/bin/python benchmarks/heuristics_vs_datatrove.py [--docs 100000] [--datatrove-docs 4000]

datatrove needs ~6-10 ms per document per filter here, so by default it sees a 4,000-document
subset of the same corpus (docs/s is a rate; agreement is measured on that subset);
`--datatrove-docs 100000` runs it on everything (about an hour).
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "web"
SOURCES = [SHARED / "c4_train_first1k" / "c4_sample.jsonl",
           SHARED / "olmo_c4_sample_1k" / "c4-sample.00000-of-00001.json.gz"]
RULESETS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]


def load_texts(n: int) -> list[str]:
    texts = []
    for path in SOURCES:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    return [texts[i % len(texts)] for i in range(n)]


def datatrove_filters() -> dict:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
            "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}


def run_datatrove(texts: list[str]) -> dict[str, tuple[list[bool], float]]:
    from datatrove.data import Document

    results = {}
    for name, filt in datatrove_filters().items():
        filt.filter(Document(text="warm up the tokenizer. " * 20, id="w"))
        start = time.perf_counter()
        keep = []
        for i, text in enumerate(texts):
            verdict = filt.filter(Document(text=text, id=str(i)))
            keep.append(verdict is True or (isinstance(verdict, tuple) and verdict[0]))
        results[name] = (keep, time.perf_counter() - start)
    return results


def run_winnow(texts: list[str]) -> dict[str, tuple[list[bool], float]]:
    from winnow.stages.heuristics import Evaluator, HeuristicsConfig

    config = HeuristicsConfig(name="heuristics")
    results = {}
    for name in RULESETS + ["all"]:
        evaluator = Evaluator(config, only=None if name == "all" else name)
        start = time.perf_counter()
        keep = [evaluator.evaluate(text)[0] is None for text in texts]
        results[name] = (keep, time.perf_counter() - start)
    return results


def worker_peak_rss(n_docs: int, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process running the heuristics shard task on an n-doc shard.

    Read from /proc/self/status VmHWM: getrusage's ru_maxrss survives execve, so a child would
    report this (large) parent's peak instead of its own.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.schemas.documents import DOCUMENT_SCHEMA

    texts = load_texts(n_docs)
    shard = workdir / f"docs-{n_docs}.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(n_docs)], "text": texts, "source": ["c4"] * n_docs,
                             "url": [None] * n_docs, "meta": [None] * n_docs}, schema=DOCUMENT_SCHEMA), shard)
    code = f"""
from winnow.stages.heuristics import Heuristics, HeuristicsConfig
from winnow.runtime import Shard, Step
from winnow.runtime.segments import process_segment
from winnow.storage.fs import resolve
out = resolve({str(workdir / f'out-{n_docs}')!r})
step = Step(Heuristics(HeuristicsConfig(name='heuristics')), out, 'bench')
[entry] = process_segment([step], Shard('part-00000', resolve({str(shard)!r})), 'bench', 2048, [None])
assert entry.rows_in == {n_docs}
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="documents for winnow (C4 samples replicated)")
    parser.add_argument("--datatrove-docs", type=int, default=4_000, help="documents for datatrove (a prefix)")
    parser.add_argument("--examples", type=int, default=3, help="disagreeing documents to print per ruleset")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    if not all(p.exists() for p in SOURCES):
        sys.exit(f"needs the shared C4 samples under {SHARED}")

    texts = load_texts(args.docs)
    print(f"{len(texts):,} documents (2,000 real C4 documents replicated); one process, one core each\n")
    winnow = run_winnow(texts)
    n_dt = min(args.datatrove_docs, len(texts))
    datatrove = run_datatrove(texts[:n_dt])

    print(f"{'ruleset':<18}{'winnow docs/s':>14}{'datatrove docs/s':>18}{'ratio':>8}{'agreement':>11}"
          f"{'winnow drops':>14}{'datatrove drops':>17}")
    total_dt = 0.0
    for name in RULESETS:
        keep_w, secs_w = winnow[name]
        keep_d, secs_d = datatrove[name]
        total_dt += secs_d
        rate_w, rate_d = len(keep_w) / secs_w, len(keep_d) / secs_d
        agree = sum(a == b for a, b in zip(keep_w, keep_d, strict=True)) / n_dt
        print(f"{name:<18}{rate_w:>14,.0f}{rate_d:>18,.0f}{rate_w / rate_d:>7.1f}x{agree:>10.2%}"
              f"{keep_w[:n_dt].count(False):>14,}{keep_d.count(False):>17,}")
    all_rate = len(texts) / winnow["all"][1]
    dt_rate = n_dt / total_dt
    print(f"{'all four, chained':<18}{all_rate:>14,.0f}{dt_rate:>18,.0f}{all_rate / dt_rate:>7.1f}x"
          "   (datatrove: sum of its four filters' time)")

    from winnow.stages.heuristics import Evaluator, HeuristicsConfig

    print("\ndisagreements (winnow verdict vs datatrove verdict):")
    for name in RULESETS:
        evaluator = Evaluator(HeuristicsConfig(name="heuristics"), only=name)
        keep_w, keep_d = winnow[name][0], datatrove[name][0]
        shown = 0
        for i in range(n_dt):
            if keep_w[i] != keep_d[i] and shown < args.examples:
                reason, detail, _ = evaluator.evaluate(texts[i])
                snippet = texts[i][:90].replace("\n", " | ")
                print(f"  {name}: doc {i % 2000}: winnow {'keep' if keep_w[i] else f'drop ({reason}: {detail})'}, "
                      f"datatrove {'keep' if keep_d[i] else 'drop'}: {snippet!r}")
                shown += 1

    if not args.skip_rss:
        print("\npeak RSS of one worker running the heuristics shard task (fresh process):")
        with tempfile.TemporaryDirectory() as tmp:
            for n in (10_000, 100_000):
                print(f"  {n:>7,}-doc shard: {worker_peak_rss(n, Path(tmp)):,.0f} MiB")
    print(f"\n(this process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)")


if __name__ == "__main__":
    main()
