"""winnow's heuristics vs NeMo Curator's English heuristic chain, on the same documents, 1 and 2 CPUs.

The documents: the distinct real web documents of the shared data and, past them, rewrites that share no
run of words with them (`benchmarks/texts.unique_corpus`), written as jsonl shards both read. NeMo Curator
1.4 runs in its own virtual environment (`make bench-peers` makes it, under `.venv-peers/`; this script
runs that when it is missing), never in winnow's: `benchmarks/peers/nemo_heuristics.py` is its side.

Each comparison runs as the rules alone (one process, one core, after a warm-up document) and as each
library's pipeline end to end (read jsonl, filter, write; Ray started with 1 and then 2 CPUs before the
clock starts, and a warm-up run on one shard first):
  - full chains: winnow's default heuristics (Gopher repetition and quality, C4, FineWeb) vs NeMo
    Curator's shipped English chain (27 filters); again with winnow's `words: whitespace`;
  - like for like: the rules both implement, Gopher's quality and repetition rules at Gopher's thresholds
    (NeMo's 17 Gopher filters at the values its YAML ships, which are Gopher's; winnow's gopher_quality and
    gopher_repetition at their defaults, c4 and fineweb off), words split at whitespace by both
    (`words: whitespace`, NeMo's way). Also with winnow's default spaCy words (datatrove's), which cost
    most of its time. The remaining differences are in the rules' own definitions (NeMo counts the top
    n-gram's characters by deleting it from the text, its symbol words are those mostly made of '#', ...):
    the agreement of the kept sets says how much they change.

Prints docs/s and docs/s per core for each, the ratios, and the keep/drop agreement.

    make bench-peers
    .venv/bin/python benchmarks/heuristics_vs_nemo.py [--docs 20000] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import in_fresh_process  # noqa: E402 - (sibling benchmark modules)
from texts import unique_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEMO_VENV = ROOT / ".venv-peers" / "nemo-curator"
NEMO_SIDE = Path(__file__).resolve().parent / "peers" / "nemo_heuristics.py"
GOPHER_ONLY = {"c4": {"enabled": False}, "fineweb": {"enabled": False}}
COMPARISONS = [  # (label, NeMo's chain: its shipped 27 filters or its Gopher ones, winnow's heuristics settings,
    # whether the pipelines run too or only the rules alone)
    ("full chains", "full", {}, True),
    ("full, winnow words: whitespace", "full", {"words": "whitespace"}, False),
    ("Gopher rules, winnow spaCy words", "gopher", GOPHER_ONLY, False),
    ("like for like: Gopher rules", "gopher", {**GOPHER_ONLY, "words": "whitespace"}, True),
]
WARM_UP = "warm up the word splitter. " * 20


def peer_python(venv: Path) -> Path:
    """The peer's interpreter, its venv made by `make bench-peers` first when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"{venv} missing: running `make bench-peers`", flush=True)
        subprocess.run(["make", "-C", str(ROOT), "bench-peers"], check=True)
    return python


def run_nemo(args: list[str]) -> dict:
    env = {**os.environ, "PATH": f"{NEMO_VENV / 'bin'}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
           "PYTHONHASHSEED": "0",  # its top-n-gram filter breaks ties in set order
           "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        done = subprocess.run([str(peer_python(NEMO_VENV)), str(NEMO_SIDE), *args, str(out)], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"NeMo Curator failed:\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


def winnow_rules(texts: list[str], ids: list[str], settings: dict) -> dict:
    """winnow's Evaluator (heuristics `settings`) on every text in this (fresh) process."""
    from winnow.stages.heuristics import Evaluator, HeuristicsConfig

    evaluator = Evaluator(HeuristicsConfig(name="heuristics", **settings))
    evaluator.evaluate(WARM_UP)
    start = time.perf_counter()
    kept = [i for i, text in zip(ids, texts, strict=True) if evaluator.evaluate(text)[0] is None]
    return {"seconds": time.perf_counter() - start, "kept": kept}


def winnow_pipeline(corpus: Path, out: Path, cpus: int, settings: dict) -> dict:
    """ingest -> heuristics through winnow's flow on local Ray with `cpus` CPUs (started, and Prefect's API
    warmed up on one shard, before the clock starts)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import ray

    from winnow.flows.curate import curate
    from winnow.storage.fs import resolve
    from winnow.storage.manifest import read_kept

    def config(source: Path, output: Path) -> dict:
        return {"input": {"uri": str(source), "id_field": "id"}, "output": str(output),
                "stages": [{"name": "ingest"}, {"name": "heuristics", **settings}],
                "runtime": {"batch_size": 1024, "progress": False}}

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        warm = out.with_name(out.name + "-warm-up-input")
        warm.mkdir()
        shutil.copy(sorted(corpus.glob("*.jsonl"))[0], warm)
        curate(config(warm, out.with_name(out.name + "-warm-up")))
        start = time.perf_counter()
        curate(config(corpus, out))
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    kept = read_kept(resolve(str(out)), "heuristics", ["id"]).column("id").to_pylist()
    return {"seconds": seconds, "kept": kept}


def write_corpus(directory: Path, ids: list[str], texts: list[str], shards: int) -> None:
    directory.mkdir(parents=True)
    for s in range(shards):
        with open(directory / f"part-{s:05d}.jsonl", "w") as f:
            for i in range(s, len(texts), shards):
                f.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")


def agreement(a: list[str], b: list[str], ids: list[str]) -> str:
    kept_a, kept_b = set(a), set(b)
    same = sum((i in kept_a) == (i in kept_b) for i in ids)
    return (f"{same / len(ids):.2%} ({len(kept_a - kept_b):,} kept by winnow only, "
            f"{len(kept_b - kept_a):,} by NeMo only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    peer_python(NEMO_VENV)

    ids, texts = unique_corpus(args.docs)
    real = sum(i.startswith("real") for i in ids)
    print(f"{len(texts):,} documents ({real:,} real, {len(texts) - real:,} rewrites), none repeated, "
          f"{args.shards} jsonl shards\n", flush=True)
    work = Path(tempfile.mkdtemp(prefix="heuristics-vs-nemo-"))
    try:
        corpus = work / "corpus"
        write_corpus(corpus, ids, texts, args.shards)
        single = work / "all.jsonl"
        with open(single, "w") as f:
            f.writelines(open(p).read() for p in sorted(corpus.glob("*.jsonl")))
        order = [json.loads(line)["id"] for line in open(single)]
        by_id = dict(zip(ids, texts, strict=True))
        ordered_texts = [by_id[i] for i in order]

        nemo = {}
        for chain, flag in (("full", []), ("gopher", ["--gopher-only"])):
            nemo[chain, "rules"] = run_nemo(["rules", str(single), *flag])
            for cpus in args.cpus:
                nemo[chain, cpus] = run_nemo(["pipeline", str(corpus), str(work / f"nemo-{chain}-{cpus}"),
                                              "--cpus", str(cpus), *flag])
        rows = []
        for label, chain, settings, pipelines in COMPARISONS:
            w = in_fresh_process(winnow_rules, ordered_texts, order, settings)
            rows.append((label, "rules alone, 1 core", 1, w, nemo[chain, "rules"]))
            for cpus in args.cpus if pipelines else []:
                w = in_fresh_process(winnow_pipeline, corpus, work / f"winnow-{len(rows)}", cpus, settings)
                rows.append((label, f"pipeline, {cpus} CPU{'s' * (cpus > 1)}", cpus, w, nemo[chain, cpus]))

        docs = len(texts)
        print(f"{'':<34}{'':<22}{'winnow docs/s/core':>19}{'NeMo docs/s/core':>18}{'ratio':>8}"
              f"{'winnow kept':>12}{'NeMo kept':>10}")
        for label, how, cpus, w, n in rows:
            rate_w, rate_n = docs / w["seconds"] / cpus, docs / n["seconds"] / cpus
            print(f"{label:<34}{how:<22}{rate_w:>19,.0f}{rate_n:>18,.0f}{rate_w / rate_n:>7.1f}x"
                  f"{len(w['kept']):>12,}{len(n['kept']):>10,}")
        print("\nkeep/drop agreement (rules alone):")
        for label, how, _, w, n in rows:
            if how.startswith("rules"):
                print(f"  {label}: {agreement(w['kept'], n['kept'], ids)}")
        print("\nwall seconds (pipelines: from the first read to the last write, Ray already started):")
        for label, how, _, w, n in rows:
            print(f"  {label}, {how}: winnow {w['seconds']:.1f} s, NeMo Curator {n['seconds']:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
