"""decontaminate: benchmark items planted in real web text are found (verbatim, lightly edited,
partially), clean web text is not flagged, redaction cuts the passage, and the stage runs on Ray."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import data_path, documents, web_documents
from support import run_stage
from winnow.runtime import RuntimeOptions, Shard
from winnow.scorers.data import benchmark_text, read_table
from winnow.stages.decontaminate import Decontaminate, DecontaminateConfig, contamination, words_with_offsets
from winnow.storage.fs import resolve

LOCAL = "reference/llmfoundry_eval_local_data"
PLANTED_FROM = ["boolq", "lambada_openai", "arc_easy", "piqa", "pubmed_qa_labeled", "agi_eval_lsat_rc"]


def all_benchmarks() -> list[dict]:
    folder = data_path(LOCAL)
    return [{"path": str(p)} for p in sorted(folder.glob("*.jsonl.gz"))]


def edited(rng: random.Random, text: str) -> str:
    """Light edits: every 15th word replaced, case and punctuation changed (runs of 14 words survive)."""
    words = text.split()
    for i in range(7, len(words), 15):
        words[i] = rng.choice(["indeed", "however", "perhaps"])
    return " ".join(words).upper().replace(".", "!").replace(",", " ;")


def plant(rng: random.Random, host: str, passage: str) -> str:
    cut = host.rfind(". ", 0, len(host) // 2) + 1 or len(host) // 2
    return f"{host[:cut]} {passage} {host[cut:]}"


@pytest.fixture(scope="module")
def stage():
    return Decontaminate(DecontaminateConfig(name="decontaminate", benchmarks=all_benchmarks()))


def test_planted_items_are_found_and_clean_web_text_is_not(stage):
    rng = random.Random(0)
    web = web_documents()
    assert len(web) >= 2000 and stage.index_size > 500_000
    # C4 as it is: what is flagged must really hold 13 words of the item in a row (no false positives)
    alone = stage.apply(documents(web, ids=[str(i) for i in range(len(web))]))
    flagged = alone.rejects.to_pylist()
    for row in flagged:
        assert any(f" {' '.join(gram)} " in f" {' '.join(words_with_offsets(row['text'])[0])} "
                   for gram in stage.item_ngrams(row["reject_detail"].split()[1].rstrip(":")))
    named = [":".join(r["reject_detail"].split(":")[:2]) for r in flagged]
    print(f"\nclean C4: {len(flagged)} of {len(web)} documents flagged ({len(flagged) / len(web):.2%}), each "
          f"holding an item's text: {named}")
    assert len(flagged) / len(web) <= 0.005
    hosts = [t for i, t in enumerate(web) if str(i) not in {r["id"] for r in flagged}]

    items = []
    for name in PLANTED_FROM:
        rows = read_table(data_path(f"{LOCAL}/{name}.jsonl.gz")).to_dicts()
        picked = [(i, benchmark_text(r)) for i, r in enumerate(rows)
                  if len(words_with_offsets(benchmark_text(r))[0]) >= 40]
        items += [(name, i, text) for i, text in rng.sample(picked, 10)]
    kinds = {"verbatim": lambda t: t, "edited": lambda t: edited(rng, t),
             "partial": lambda t: " ".join(t.split()[len(t.split()) // 2:])}
    texts, expected = [], []
    for kind, change in kinds.items():
        for name, row, text in items:
            texts.append(plant(rng, rng.choice(hosts), change(text)))
            expected.append((kind, f"{name}:{row}"))
    result = stage.apply(documents(texts, ids=[str(i) for i in range(len(texts))]))
    rejects = {r["id"]: r for r in result.rejects.to_pylist()}
    found = {kind: 0 for kind in kinds}
    for i, (kind, item) in enumerate(expected):
        row = rejects.get(str(i))
        if row is not None:
            assert row["reject_reason"] == f"contaminated:{item.split(':')[0]}", (item, row["reject_detail"])
            # items sharing a passage (BoolQ asks several questions of one) share its n-grams: the detail
            # names the item most of the match belongs to, and the others
            assert item in row["reject_detail"], (item, row["reject_detail"])
            found[kind] += 1
    print(f"planted ({len(items)} items of >= 40 words from {len(PLANTED_FROM)} benchmarks): "
          + ", ".join(f"{k} {n}/{len(items)}" for k, n in found.items()))
    assert found == {kind: len(items) for kind in kinds}  # the documented rate: every such plant is found


def test_redact_cuts_the_passage_and_its_neighbourhood(stage):
    item = benchmark_text(read_table(data_path(f"{LOCAL}/boolq.jsonl.gz")).to_dicts()[0])
    before, after = "A " + "quiet garden " * 150, " the end of the page " * 20
    config = stage.config.model_copy(update={"mode": "redact", "redact_window": 50})
    redactor = Decontaminate.__new__(Decontaminate)
    redactor.__dict__.update(stage.__dict__, config=config)
    result = redactor.apply(documents([before + item + after]))
    text = result.kept.column("text")[0].as_py()
    assert result.rejects.num_rows == 0 and item[:60] not in text and item[-60:] not in text
    assert text.startswith("A quiet garden") and text.endswith("end of the page")
    assert result.counters["redacted_chars"] >= len(item) + 100 - 2


@pytest.mark.usefixtures("ray_local")
def test_on_ray_over_shards_counts_add_up(tmp_path):
    rows = read_table(data_path(f"{LOCAL}/copa.jsonl.gz")).to_dicts()
    bench = tmp_path / "gsm8k_like.jsonl"  # another form: the text in named fields
    bench.write_text("".join(json.dumps({"question": "Natalia sold clips to 48 of her friends in April, and then "
                                                     "she sold half as many clips in May.",
                                         "answer": "How many clips did Natalia sell altogether in April and May? 72"})
                             + "\n" for _ in range(1)))
    hosts = web_documents()[:200]
    texts = [plant(random.Random(i), h, "Natalia sold clips to 48 of her friends in April, and then she sold half "
                                         "as many clips in May. How many clips") if i % 10 == 0 else h
             for i, h in enumerate(hosts)]
    shards = []
    for s in range(2):
        path = tmp_path / "in" / f"part-{s}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(documents(texts[s::2], ids=[f"{s}-{i}" for i in range(len(texts[s::2]))]), path)
        shards.append(Shard(path.stem, resolve(str(path))))
    config = DecontaminateConfig(name="decontaminate",
                                 benchmarks=[{"path": str(bench), "fields": ["question", "answer"]},
                                             {"path": str(data_path(f"{LOCAL}/copa.jsonl.gz"))}])
    run = tmp_path / "run"  # laid out as a run's output: OUT/<stage>/
    manifest, _ = run_stage(Decontaminate(config), shards, resolve(str(run / "decontaminate")), "h",
                            RuntimeOptions(run_id="t", progress=False))
    assert manifest.rows_in == 200 == manifest.rows_out + manifest.rows_rejected
    assert manifest.rejected_by_reason == {"contaminated:gsm8k_like": 20} and len(rows) == 100
    assert manifest.counters == {"contaminated:gsm8k_like": 20}
    # the table to publish: which items were found, in how many documents
    assert contamination(resolve(str(run))) == {"gsm8k_like:0": 20}
    line, bars = Decontaminate.summary(str(run), {})
    assert line.startswith("benchmark items found in the corpus: gsm8k_like 1 (20 documents") and \
        bars == [("benchmark items found in the corpus", [("gsm8k_like", 1)])]
    report = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "decontam-report", str(run)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "gsm8k_like:0\t20" in report.stdout, report.stdout + report.stderr
