"""winnow's heuristics vs datatrove's Gopher/C4/FineWeb filters on the same real documents.

The documents: every distinct document of the shared web samples (C4, Common Crawl, the Pile, Paloma's
4chan and Guardian pages; about 4,100, none repeated; `benchmarks/texts.unique_web_texts`). Each ruleset
of each library runs in a fresh process of its own, one core, after one warm-up document, so no
tokenizer or word cache carries over from another measurement. Prints, per ruleset: docs/s for winnow and
datatrove, the ratio, the keep/drop agreement with examples of disagreement. Then the peak RSS of a
worker processing a 10k-doc and a 100k-doc shard (it must not grow with shard size; the documents are
the real ones and their rewrites, `texts.unique_corpus`).

    make bench   # installs datatrove + spacy (the `bench` extra)
    .venv/bin/python benchmarks/heuristics_vs_datatrove.py [--docs N] [--skip-rss]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import in_fresh_process  # noqa: E402 - (sibling benchmark modules)
from texts import unique_corpus, unique_web_texts  # noqa: E402

RULESETS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
WARM_UP = "warm up the tokenizer. " * 20


def datatrove_filters() -> dict:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
            "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}


def measure(system: str, ruleset: str, texts: list[str]) -> tuple[list[bool], float]:
    """One ruleset of one library over the texts: keep verdicts and seconds (run in a fresh process)."""
    if system == "datatrove":
        from datatrove.data import Document

        filt = datatrove_filters()[ruleset]
        filt.filter(Document(text=WARM_UP, id="w"))
        start = time.perf_counter()
        keep = []
        for i, text in enumerate(texts):
            verdict = filt.filter(Document(text=text, id=str(i)))
            keep.append(verdict is True or (isinstance(verdict, tuple) and verdict[0]))
        return keep, time.perf_counter() - start
    from winnow.stages.heuristics import Evaluator, HeuristicsConfig, split_words

    if ruleset == "words":  # the words alone, split as the rules split them (the spaCy port, cold)
        split_words(WARM_UP)
        start = time.perf_counter()
        for text in texts:
            split_words(text)
        return [], time.perf_counter() - start
    evaluator = Evaluator(HeuristicsConfig(name="heuristics"), only=None if ruleset == "all" else ruleset)
    evaluator.evaluate(WARM_UP)
    start = time.perf_counter()
    keep = [evaluator.evaluate(text)[0] is None for text in texts]
    return keep, time.perf_counter() - start


def worker_peak_rss(n_docs: int, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process running the heuristics shard task on an n-doc shard.

    Read from /proc/self/status VmHWM: getrusage's ru_maxrss survives execve, so a child would
    report this (large) parent's peak instead of its own.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from winnow.schemas.documents import DOCUMENT_SCHEMA

    _, texts = unique_corpus(n_docs)
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
    parser.add_argument("--docs", type=int, help="only the first N documents (default: all of them)")
    parser.add_argument("--examples", type=int, default=3, help="disagreeing documents to print per ruleset")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()

    texts = unique_web_texts()[: args.docs]
    n = len(texts)
    print(f"{n:,} distinct real web documents; each ruleset of each library in a fresh process, one core\n")
    winnow = {name: in_fresh_process(measure, "winnow", name, texts) for name in RULESETS + ["all", "words"]}
    datatrove = {name: in_fresh_process(measure, "datatrove", name, texts) for name in RULESETS}

    print(f"{'ruleset':<18}{'winnow docs/s':>14}{'datatrove docs/s':>18}{'ratio':>8}{'agreement':>11}"
          f"{'winnow drops':>14}{'datatrove drops':>17}")
    for name in RULESETS:
        (keep_w, secs_w), (keep_d, secs_d) = winnow[name], datatrove[name]
        agree = sum(a == b for a, b in zip(keep_w, keep_d, strict=True)) / n
        print(f"{name:<18}{n / secs_w:>14,.0f}{n / secs_d:>18,.0f}{secs_d / secs_w:>7.1f}x{agree:>10.2%}"
              f"{keep_w.count(False):>14,}{keep_d.count(False):>17,}")
    total_dt = sum(secs for _, secs in datatrove.values())
    secs_all = winnow["all"][1]
    print(f"{'all four, chained':<18}{n / secs_all:>14,.0f}{n / total_dt:>18,.0f}{total_dt / secs_all:>7.1f}x"
          "   (datatrove: the sum of its four filters' times)")
    chunks = [chunk for text in texts for chunk in text.split()]
    distinct = len(set(chunks))
    secs_words = winnow["words"][1]
    print(f"\nwinnow's word splitting alone, as the rules split them: {secs_words:.2f} s ({n / secs_words:,.0f} "
          f"docs/s); {distinct:,} distinct whitespace chunks of {len(chunks):,} ({distinct / len(chunks):.1%}), "
          f"each split once: {secs_words / distinct * 1e6:.1f} µs per distinct chunk, lookups included")

    from winnow.stages.heuristics import Evaluator, HeuristicsConfig

    print("\ndisagreements (winnow verdict vs datatrove verdict):")
    for name in RULESETS:
        evaluator = Evaluator(HeuristicsConfig(name="heuristics"), only=name)
        keep_w, keep_d = winnow[name][0], datatrove[name][0]
        shown = 0
        for i in range(n):
            if keep_w[i] != keep_d[i] and shown < args.examples:
                reason, detail, _ = evaluator.evaluate(texts[i])
                snippet = texts[i][:90].replace("\n", " | ")
                print(f"  {name}: doc {i}: winnow {'keep' if keep_w[i] else f'drop ({reason}: {detail})'}, "
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
