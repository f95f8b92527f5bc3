"""NeMo Curator's English heuristic chain, run by `benchmarks/heuristics_vs_nemo.py` in NeMo Curator's own
virtual environment (this file imports nothing from winnow).

The chain is the one NeMo Curator ships (`nemo_curator/config/text/heuristic_filter_english_pipeline.yaml`),
read from the installed package; `--gopher-only` keeps the filters that implement Gopher's quality and
repetition rules (at the YAML's thresholds, which are Gopher's).

    python nemo_heuristics.py rules INPUT.jsonl OUT.json [--gopher-only]
        each filter's score_document/keep_document on every text in this one process (one core)
    python nemo_heuristics.py pipeline INPUT_DIR OUTPUT_DIR OUT.json --cpus K [--gopher-only]
        JsonlReader -> the ScoreFilters -> JsonlWriter on NeMo Curator's Ray Data executor, Ray started
        with K CPUs (not timed); a warm-up run on the first file first

OUT.json: {"seconds": ..., "kept": [ids]}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import yaml

GOPHER = {"SymbolsToWordsFilter", "BulletsFilter", "WordCountFilter", "MeanWordLengthFilter", "EllipsisFilter",
          "CommonEnglishWordsFilter", "WordsWithoutAlphabetsFilter", "RepeatedLinesFilter",
          "RepeatedParagraphsFilter", "RepeatedLinesByCharFilter", "RepeatedParagraphsByCharFilter",
          "RepeatingTopNGramsFilter", "RepeatingDuplicateNGramsFilter"}


def instantiate(spec: dict):
    module, _, name = spec["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**{k: v for k, v in spec.items() if k != "_target_"})


def filters(gopher_only: bool) -> list:
    """The YAML's document filters, in its order."""
    import nemo_curator

    path = Path(nemo_curator.__file__).parent / "config" / "text" / "heuristic_filter_english_pipeline.yaml"
    stages = yaml.safe_load(path.read_text())["stages"]
    specs = [s["filter_obj"] for s in stages if "filter_obj" in s]
    return [instantiate(s) for s in specs if not gopher_only or s["_target_"].rpartition(".")[2] in GOPHER]


def run_rules(input_path: str, gopher_only: bool) -> dict:
    docs = [json.loads(line) for line in open(input_path)]
    chain = filters(gopher_only)
    for f in chain:  # warm up (word splitters, regexes)
        f.keep_document(f.score_document("warm up the word splitter. " * 20))
    start = time.perf_counter()
    kept = [d["id"] for d in docs if all(f.keep_document(f.score_document(d["text"])) for f in chain)]
    return {"seconds": time.perf_counter() - start, "kept": kept}


def run_pipeline(input_dir: str, output_dir: str, cpus: int, gopher_only: bool) -> dict:
    from nemo_curator.backends.ray_data import RayDataExecutor
    from nemo_curator.core.client import RayClient
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.text.filters.score_filter import ScoreFilter
    from nemo_curator.stages.text.io.reader import JsonlReader
    from nemo_curator.stages.text.io.writer import JsonlWriter

    def pipeline(files, out: str) -> Pipeline:
        p = Pipeline(name="heuristics")
        p.add_stage(JsonlReader(file_paths=files, files_per_partition=1))
        for f in filters(gopher_only):
            p.add_stage(ScoreFilter(filter_obj=f, text_field="text"))
        p.add_stage(JsonlWriter(path=out))
        return p

    client = RayClient(num_cpus=cpus, include_dashboard=False)
    client.start()
    try:
        files = sorted(str(p) for p in Path(input_dir).glob("*.jsonl"))
        pipeline(files[:1], output_dir + "-warm-up").run(RayDataExecutor())
        start = time.perf_counter()
        pipeline(files, output_dir).run(RayDataExecutor())
        seconds = time.perf_counter() - start
    finally:
        client.stop()
    kept = [json.loads(line)["id"] for p in sorted(Path(output_dir).glob("*.jsonl")) for line in open(p)]
    return {"seconds": seconds, "kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["rules", "pipeline"])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--gopher-only", action="store_true")
    args = parser.parse_intermixed_args()
    if args.mode == "rules":
        source, out = args.paths
        result = run_rules(source, args.gopher_only)
    else:
        source, output_dir, out = args.paths
        result = run_pipeline(source, output_dir, args.cpus, args.gopher_only)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
