"""Scheduled runs that remember: daily runs over one run index decide as one run over every day would."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from conftest import web_documents, write_jsonl
from winnow.flows.curate import curate
from winnow.flows.inspect import trace
from winnow.schemas.config import S3Config
from winnow.storage.fs import resolve
from winnow.storage.index import RunIndex
from winnow.storage.manifest import read_kept

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
    return set(kept_texts(summary, stage))


def kept_texts(summary: dict, stage: str) -> dict[str, str]:
    table = read_kept(resolve(summary["output"]), stage, ["id", "text"])
    return dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))


def rejects(summary: dict, stage: str) -> dict[str, str]:
    out = resolve(summary["output"]).join(stage, "rejects")
    found = {}
    if out.exists():
        for f in out.list_files("*.parquet"):
            table = pq.read_table(f.path, columns=["id", "reject_detail"])
            found.update(zip(table["id"].to_pylist(), table["reject_detail"].to_pylist(), strict=True))
    return found


@pytest.mark.parametrize("stage", [{"name": "exact_dedup", "keep": "first"},
                                   {"name": "dedup", "keep": "first", "verify": True},
                                   {"name": "paragraph_dedup", "unit": "line"}],
                         ids=["exact_dedup", "dedup", "paragraph_dedup"])
def test_daily_runs_keep_what_one_run_over_all_days_keeps(tmp_path, ray_local, session_prefect_api, stage):
    days = daily_corpus()
    everything = tmp_path / "all"
    for day, files in enumerate(days):
        write_day(everything, day, files)
    one_run = curate(config(everything, tmp_path / "one", None, stage))

    incoming, index = tmp_path / "crawl", tmp_path / "index"
    kept, dropped, runs, outputs = {}, {}, [], {}
    for day, files in enumerate(days):
        write_day(incoming, day, files)
        summary = curate(config(incoming, tmp_path / "out" / "{run_id}", index, stage))
        assert summary["stages"]["ingest"]["shards"] == 2  # only the day's new files
        assert summary["index"]["appended"] == day + 1
        runs.append(summary["run_id"])
        kept.update(kept_texts(summary, stage["name"]))
        dropped.update(rejects(summary, stage["name"]))
        outputs.update(dict.fromkeys(rejects(summary, stage["name"]), summary["output"]))

    assert kept == kept_texts(one_run, stage["name"])  # (paragraph_dedup: the same units cut from the same texts)
    assert set(dropped) == set(rejects(one_run, stage["name"]))
    if stage["name"] == "paragraph_dedup":
        assert one_run["stages"]["paragraph_dedup"]["extra"]["units_removed"] > 100
        return
    cross_run = {i: d for i, d in dropped.items() if " from run " in d}
    assert cross_run, "the corpus plants copies of earlier days"
    day_of = {r["id"]: day for day, files in enumerate(days) for rows in files for r in rows}
    for doc, detail in cross_run.items():
        survivor, run = detail.removeprefix("duplicate of ").split(" (")[0].split(" from run ")
        assert survivor in kept and run == runs[day_of[survivor]] and day_of[survivor] < day_of[doc]
    doc = next(iter(cross_run))  # what `winnow inspect OUT --id DOC` prints
    steps, _ = trace(resolve(outputs[doc]), doc)
    assert steps[-1].outcome == "dropped" and cross_run[doc] in steps[-1].detail
    if stage["name"] == "dedup":
        for doc in ("chain-b", "chain-c"):
            assert dropped[doc].startswith(f"duplicate of d0-0000 from run {runs[0]}")


def index_doc_ids(index: RunIndex, namespace_prefix: str) -> list[str]:
    view = index.view()
    return [i for ns, docs in view.docs.items() if ns.startswith(namespace_prefix)
            for path, *_ in docs for i in pq.read_table(index.root.join(path).open_read())["id"].to_pylist()]


def killed_and_rerun(monkeypatch, input_uri: str, output: str, index_uri: str, storage: dict) -> None:
    """A run killed after writing its index parts, before its commit; its rerun killed after the commit, before
    its summary; then rerun again. The index ends with one generation holding every kept document once."""
    stages = [{"name": "ingest"}, {"name": "exact_dedup", "keep": "first"}, {"name": "dedup", "keep": "first"}]
    cfg = {"input": {"uri": input_uri, "id_field": "id", "new_only": True}, "output": output,
           "index": {"uri": index_uri, "partitions": 4}, "stages": stages, "storage": storage,
           "runtime": {"progress": False}}
    commit = RunIndex.commit

    def killed_before(self, record):
        raise RuntimeError("injected: the driver dies before the index commit")

    def killed_after(self, record):
        commit(self, record)
        raise RuntimeError("injected: the driver dies after the index commit")

    index = RunIndex(index_uri, S3Config(**storage.get("s3", {})))
    for fault, generations in [(killed_before, []), (killed_after, [1])]:
        monkeypatch.setattr(RunIndex, "commit", fault)
        with pytest.raises(Exception, match="injected"):
            curate(cfg)
        assert index.generation_numbers() == generations
        parts = index.root.join("exact_dedup", "whitespace", "keys")
        assert parts.exists() and parts.list_files("*.parquet")  # written before the commit
    monkeypatch.setattr(RunIndex, "commit", commit)
    summary = curate(cfg)
    assert summary["index"]["appended"] == 1 and index.generation_numbers() == [1]
    output_loc = resolve(summary["output"], S3Config(**storage.get("s3", {})))
    for stage in ("exact_dedup", "dedup"):
        ids = read_kept(output_loc, stage, ["id"])["id"].to_pylist()
        assert sorted(index_doc_ids(index, stage + "/")) == sorted(ids) and len(set(ids)) == len(ids) > 100


def test_a_run_killed_before_or_after_its_index_commit_appends_exactly_once(tmp_path, monkeypatch, ray_local,
                                                                           session_prefect_api):
    write_day(tmp_path / "crawl", 0, daily_corpus()[0])
    killed_and_rerun(monkeypatch, str(tmp_path / "crawl"), str(tmp_path / "out" / "{date}"), str(tmp_path / "index"),
                     {})


@pytest.mark.slow
def test_the_same_on_s3_through_a_faulty_store(tmp_path, monkeypatch, ray_local, session_prefect_api, s3_server):
    import boto3
    from s3_faults import FaultyS3Proxy

    write_day(tmp_path / "crawl", 0, daily_corpus()[0])
    for path in sorted((tmp_path / "crawl").iterdir()):
        boto3.client("s3", endpoint_url=s3_server).upload_file(str(path), "winnow-test", f"crawl/{path.name}")
    with FaultyS3Proxy(s3_server, throttle=0.03, drop=0.005, seed=5) as proxy:
        storage = {"s3": {"endpoint_url": proxy.url, "region": "us-east-1", "access_key_id": "testing",
                          "secret_access_key": "testing-secret"}}
        killed_and_rerun(monkeypatch, "s3://winnow-test/crawl", "s3://winnow-test/nightly/{date}",
                         "s3://winnow-test/index", storage)
        assert proxy.count("throttled") + proxy.count("dropped") > 0


def test_index_show_compact_and_forget(tmp_path, ray_local, session_prefect_api, capsys):
    from winnow.flows.cli import main

    days = daily_corpus()
    stage = {"name": "exact_dedup", "keep": "first"}
    index = RunIndex(str(tmp_path / "index"))
    runs = []
    for day in range(2):
        write_day(tmp_path / "crawl", day, days[day])
        runs.append(curate(config(tmp_path / "crawl", tmp_path / "out" / "{run_id}", tmp_path / "index", stage)))
    kept = sorted(index_doc_ids(index, "exact_dedup/"))
    assert main(["index", str(tmp_path / "index"), "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["generation"] == 2 and shown["files"] == 4 and shown["runs"] == {"1": runs[0]["run_id"],
                                                                                   "2": runs[1]["run_id"]}
    assert shown["namespaces"]["exact_dedup/whitespace"]["documents"] == len(kept)

    assert main(["index", str(tmp_path / "index"), "compact"]) == 0
    view = index.view()
    assert view.base == 3 and all(len(parts) == 1 for parts in view.keys["exact_dedup/whitespace"].values())
    assert sorted(index_doc_ids(index, "exact_dedup/")) == kept
    assert len(list((tmp_path / "index" / "exact_dedup").rglob("*.parquet"))) == 32 + 1  # merged parts only

    assert main(["index", str(tmp_path / "index"), "forget", runs[1]["run_id"]]) == 0
    assert sorted(index_doc_ids(index, "exact_dedup/")) == sorted(kept_ids(runs[0], "exact_dedup"))
    assert set(index.view().known_files()) == {str(tmp_path / "crawl" / f"day0-{k}.jsonl") for k in range(2)}
    again = curate(config(tmp_path / "crawl", tmp_path / "out" / "{run_id}", tmp_path / "index", stage))
    assert again["index"]["files"] == 2 and kept_ids(again, "exact_dedup") == kept_ids(runs[1], "exact_dedup")
    assert main(["index", str(tmp_path / "index"), "forget", "no-such-run"]) == 2


def test_a_source_mostly_removed_by_dedup_raises_the_alarm_with_its_largest_clusters(tmp_path, ray_local,
                                                                                     session_prefect_api):
    from winnow.flows.report import build_report

    texts = [t for t in web_documents() if len(t.split()) >= 150][:60]
    template = "Accept cookies to continue. This site uses cookies to improve your experience. " * 3
    write_jsonl(tmp_path / "in" / "news.jsonl", [json.dumps({"id": f"n{i}", "text": t}) for i, t in enumerate(texts)])
    write_jsonl(tmp_path / "in" / "forum.jsonl", [json.dumps({"id": f"f{i}", "text": template}) for i in range(30)]
                + [json.dumps({"id": f"g{i}", "text": t}) for i, t in enumerate(texts[:5])])
    summary = curate(config(tmp_path / "in", tmp_path / "out", None, {"name": "exact_dedup", "keep": "first"}))
    (alarm,) = summary["alarms"]
    # (forum.jsonl is read first: its copies of five news articles survive, the news file loses 5 of 60)
    assert alarm["stage"] == "exact_dedup" and alarm["sources"] == [{"source": "forum.jsonl", "in": 35,
                                                                      "removed": 29}]
    biggest = alarm["clusters"][0]
    assert biggest["survivor"] == "f0" and biggest["removed"] == 29 and len(biggest["members"]) == 3
    assert biggest["members"][0]["text"].startswith("Accept cookies")
    assert 'id="alarms"' in build_report(summary["output"]) and "forum.jsonl" in build_report(summary["output"])


def test_a_stage_whose_keys_differ_from_the_index_stops_before_any_work(tmp_path):
    from winnow.stages.base import RunContext
    from winnow.stages.dedup import Dedup, DedupConfig
    from winnow.storage.index import IndexStateError, IndexView

    made = Dedup(DedupConfig())
    view = IndexView(resolve(str(tmp_path)), 32, 1, keyspaces={made.namespace: DedupConfig().keyspace()})
    Dedup(DedupConfig(), RunContext(index=view))  # the same settings: accepted
    with pytest.raises(IndexStateError, match=r"stage 'dedup'.*ngram=5.*this run: ngram=3"):
        Dedup(DedupConfig(ngram=3), RunContext(index=view))
