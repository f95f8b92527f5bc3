"""Scheduled runs that remember: daily runs over one run index decide as one run over every day would."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from conftest import web_documents, write_jsonl
from winnow.flows.curate import curate
from winnow.storage.fs import resolve

DAYS = 3


def edited(text: str, rng: random.Random, share: float = 0.04) -> str:
    """`text` with a few words replaced: a near duplicate (Jaccard of 5-gram shingles around 0.8)."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * share))):
        words[i] = rng.choice(["alpha", "bravo", "delta", "echo", "kilo"])
    return " ".join(words)


def daily_corpus() -> list[list[list[dict]]]:
    """Three days of two files each: real C4 text with exact and near copies planted within and across days,
    and a chain A (day 1) ~ B (day 2) ~ C (day 2) where C repeats B but not A."""
    rng = random.Random(3)
    texts = [t for t in web_documents() if len(t.split()) >= 150][:360]
    days: list[list[list[dict]]] = [[[], []] for _ in range(DAYS)]
    for i, text in enumerate(texts):
        days[i % DAYS][(i // DAYS) % 2].append({"id": f"d{i % DAYS}-{i:04d}", "text": text})
    n = 0
    for day in range(DAYS):
        for k in range(24):  # copies of documents from this day or an earlier one
            source = rng.choice(texts[: (day + 1) * 120])
            text = source if k % 2 else edited(source, rng)
            days[day][k % 2].append({"id": f"copy-{day}-{k:02d}", "text": text})
            n += 1
    b = edited(texts[0], rng, 0.015)  # texts[0] is d0-0000, on day 1
    days[1][0].append({"id": "chain-b", "text": b})
    days[1][1].append({"id": "chain-c", "text": edited(b, rng, 0.015)})
    for day in days:
        for part in day:
            rng.shuffle(part)
    return days


def write_day(folder, day: int, files: list[list[dict]]) -> None:
    for k, rows in enumerate(files):
        write_jsonl(folder / f"day{day}-{k}.jsonl", [json.dumps(r) for r in rows])


def config(input_dir, output, index, stage: dict) -> dict:
    return {"input": {"uri": str(input_dir), "id_field": "id", "new_only": index is not None},
            "output": str(output), **({"index": str(index)} if index else {}),
            "stages": [{"name": "ingest"}, stage], "runtime": {"progress": False}}


def kept_ids(summary: dict, stage: str) -> set[str]:
    out = resolve(summary["output"]).join(stage)
    return {i for f in out.list_files("*.parquet") for i in pq.read_table(f.path, columns=["id"])["id"].to_pylist()}


def rejects(summary: dict, stage: str) -> dict[str, str]:
    out = resolve(summary["output"]).join(stage, "rejects")
    found = {}
    if out.exists():
        for f in out.list_files("*.parquet"):
            table = pq.read_table(f.path, columns=["id", "reject_detail"])
            found.update(zip(table["id"].to_pylist(), table["reject_detail"].to_pylist(), strict=True))
    return found


@pytest.mark.parametrize("stage", [{"name": "exact_dedup", "keep": "first"}, {"name": "dedup", "keep": "first"}],
                         ids=["exact_dedup", "dedup"])
def test_daily_runs_keep_what_one_run_over_all_days_keeps(tmp_path, ray_local, session_prefect_api, stage):
    days = daily_corpus()
    everything = tmp_path / "all"
    for day, files in enumerate(days):
        write_day(everything, day, files)
    one_run = curate(config(everything, tmp_path / "one", None, stage))

    incoming, index = tmp_path / "crawl", tmp_path / "index"
    kept, dropped, runs = set(), {}, []
    for day, files in enumerate(days):
        write_day(incoming, day, files)
        summary = curate(config(incoming, tmp_path / "out" / "{run_id}", index, stage))
        assert summary["stages"]["ingest"]["shards"] == 2  # only the day's new files
        assert summary["index"]["appended"] == day + 1
        runs.append(summary["run_id"])
        kept |= kept_ids(summary, stage["name"])
        dropped.update(rejects(summary, stage["name"]))

    assert kept == kept_ids(one_run, stage["name"])
    assert set(dropped) == set(rejects(one_run, stage["name"]))
    cross_run = {i: d for i, d in dropped.items() if " from run " in d}
    assert cross_run, "the corpus plants copies of earlier days"
    day_of = {r["id"]: day for day, files in enumerate(days) for rows in files for r in rows}
    for doc, detail in cross_run.items():
        survivor, run = detail.removeprefix("duplicate of ").split(" (")[0].split(" from run ")
        assert survivor in kept and run == runs[day_of[survivor]] and day_of[survivor] < day_of[doc]
    if stage["name"] == "dedup":
        for doc in ("chain-b", "chain-c"):
            assert dropped[doc].startswith(f"duplicate of d0-0000 from run {runs[0]}")
