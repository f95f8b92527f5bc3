"""data-juicer's `document_minhash_deduplicator`, run by `benchmarks/dedup_vs_datatrove.py` in data-juicer's
own virtual environment (this file imports nothing from winnow).

    python dj_minhash.py INPUT_DIR WORK_DIR OUT.json --np 2

Reads the Parquet shards of INPUT_DIR, deduplicates with word 5-grams (whitespace tokens, lowercased), 14
bands x 8 rows (112 permutations), as winnow's `dedup` defaults, with `np` processes and its default
executor; failing operators stop the run (`skip_op_error: false`). OUT.json: {"seconds": wall time of
the executor from loading to export, "kept": [ids]}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir")
    parser.add_argument("work_dir")
    parser.add_argument("out")
    parser.add_argument("--np", type=int, default=2)
    args = parser.parse_args()

    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    work = Path(args.work_dir)
    work.mkdir(parents=True)
    export = work / "kept.jsonl"
    config = {
        "project_name": "winnow-benchmark", "dataset_path": args.input_dir, "suffixes": [".parquet"],
        "export_path": str(export), "np": args.np, "text_keys": "text", "skip_op_error": False,
        "use_cache": False, "temp_dir": str(work / "tmp"), "work_dir": str(work / "job"), "open_monitor": False,
        "auto_op_parallelism": False,
        "process": [{"document_minhash_deduplicator": {
            "tokenization": "space", "window_size": 5, "lowercase": True, "num_permutations": 112,
            "num_bands": 14, "num_rows_per_band": 8, "jaccard_threshold": 0.8}}],
    }
    (work / "tmp").mkdir()
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = init_configs(args=["--config", str(path)])
    start = time.perf_counter()
    DefaultExecutor(cfg).run()
    seconds = time.perf_counter() - start
    kept = [json.loads(line)["id"] for p in sorted(work.glob("kept*.jsonl")) for line in open(p)]
    Path(args.out).write_text(json.dumps({"seconds": seconds, "kept": kept}))


if __name__ == "__main__":
    main()
