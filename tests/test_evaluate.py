"""`winnow eval`: each measurement against values worked by hand, known by construction, or computed here
another way (brute force over every pair, the rejects read directly)."""

from __future__ import annotations

import json
import math
import random
import re

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from scipy.stats import norm

from conftest import data_path, web_documents, write_jsonl
from support import edited
from winnow.evaluate.decontam import FORMS, evaluate_decontam, read_corpus
from winnow.evaluate.dedup import ShingleSets, _missed_pairs, evaluate_dedup
from winnow.evaluate.run import evaluate_run
from winnow.evaluate.scorer import Scored, evaluate
from winnow.flows.cli import main
from winnow.flows.inspect import ReadCounter
from winnow.schemas.config import S3Config
from winnow.stages.decontaminate import BenchmarkSource, DecontaminateConfig, read_items
from winnow.stages.dedup import DedupConfig, shingles
from winnow.storage.fs import resolve

# ---------------------------------------------------------------- scorer

def test_scorer_figures_match_a_hand_worked_example():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    positive = np.array([False, True] * 4)
    r = evaluate(Scored(scores, "hand"), positive, resamples=200, target_precision=1.0, target_recall=1.0)
    assert r["roc_auc"] == pytest.approx(10 / 16)  # positive above negative in 1 + 2 + 3 + 4 of 16 pairs
    assert r["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 7) / 4)  # precision at each positive
    at = {round(t, 2): row for t, *row in r["thresholds"]}
    assert at[0.5] == pytest.approx([0.5, 0.5, 0.5]) and at[0.8] == pytest.approx([0.125, 1.0, 0.25])
    share = {round(s, 2): row for s, *row in r["shares"]}
    assert share[0.3] == pytest.approx([0.7, 0.5, 0.25])  # floor(8 x 0.3) = 2 kept: 0.8 (+), 0.7 (-)
    assert share[0.5] == pytest.approx([0.5, 0.5, 0.5])
    assert [row[5] for row in r["calibration"]] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert r["targets"]["precision"]["threshold"] == 0.8 and r["targets"]["precision"]["recall"] == 0.25
    assert r["targets"]["recall"]["threshold"] == 0.2
    assert r["targets"]["recall"]["precision"] == pytest.approx(4 / 7)


def test_scorer_auc_interval_holds_the_auc_known_by_construction():
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)])
    positive = np.arange(6000) < 3000
    r = evaluate(Scored(scores, "normal"), positive, resamples=300)
    truth = norm.cdf(1 / math.sqrt(2))  # P(X > Y), X ~ N(1, 1), Y ~ N(0, 1)
    lo, hi = r["roc_auc_ci"]
    assert lo < truth < hi and hi - lo < 0.04
    assert abs(r["roc_auc"] - truth) < 0.015
    assert r["thresholds"][0][0] > scores.min()  # unbounded scores: thresholds spread over their range


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A fastText quality model trained here, and labelled documents it separates imperfectly."""
    from winnow.scorers.fasttext import train

    rng = random.Random(0)
    good, bad = "reference study archive history science".split(), "cheap deal click offer casino".split()
    common = "the of and a to in is was".split()

    def doc(words):
        return " ".join(rng.choice(words if rng.random() < 0.35 else common) for _ in range(40))

    texts = [doc(good) for _ in range(300)] + [doc(bad) for _ in range(300)]
    labels = ["hq"] * 300 + ["cc"] * 300
    folder = tmp_path_factory.mktemp("labelled")
    train(texts[::2], labels[::2], folder / "quality.bin", positive="hq", holdout=0.0)
    noisy = [lab if rng.random() > 0.1 else ("cc" if lab == "hq" else "hq") for lab in labels[1::2]]
    (folder / "labels.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(texts[1::2], noisy,
                                                                                               strict=True)))
    return folder, texts[1::2], np.array([lab == "hq" for lab in noisy])


def test_eval_scorer_cli_on_a_model_and_on_a_stage_config(labelled, capsys):
    from sklearn.metrics import roc_auc_score

    from winnow.scorers.fasttext import FastTextScorer

    folder, texts, positive = labelled
    model = folder / "quality.bin"
    page = folder / "page.html"
    assert main(["eval", "scorer", str(model), "--data", str(folder / "labels.csv"), "--positive", "hq",
                 "--target-precision", "0.9", "--bootstrap", "200", "--html", str(page)]) == 0
    printed = capsys.readouterr().out
    expected = roc_auc_score(positive, FastTextScorer(model).predict_all(texts)["hq"])
    assert f"ROC AUC {expected:.4f}" in printed and 0.7 < expected < 1.0
    assert "precision >= 0.9: threshold" in printed and "calibration by score decile" in printed
    drawn = page.read_text()
    assert drawn.count("<polyline") >= 3 and 'id="shares"' in drawn and "scores of negative documents" in drawn

    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({"input": {"uri": "x"}, "output": "y", "stages": [
        {"name": "ingest"}, {"name": "quality", "scorer": {"model": str(model)}, "threshold": 0.5}]}))
    assert main(["eval", "scorer", str(config), "--data", str(folder / "labels.csv"), "--positive", "hq",
                 "--bootstrap", "50"]) == 0
    kept = float(np.mean(FastTextScorer(model).predict_all(texts)["hq"] >= 0.5))
    assert f"the stage's rule (quality_score >= 0.5) keeps {kept:.1%}" in capsys.readouterr().out

    assert main(["eval", "scorer", str(folder / "missing.bin"), "--data", str(folder / "labels.csv")]) == 2
    assert "missing.bin" in capsys.readouterr().out


# ---------------------------------------------------------------- run

def _stage_rejects(out, stage: str) -> dict[str, str]:
    manifest = json.loads((out / stage / "_manifest.json").read_text())
    found = {}
    for shard in manifest["shards"]:
        if shard["rejects"]:
            table = pq.read_table(out / stage / shard["rejects"]["path"], columns=["id", "reject_reason"])
            found.update(zip(table["id"].to_pylist(), table["reject_reason"].to_pylist(), strict=True))
    return found


def test_eval_run_follows_labelled_documents_through_the_demo_run(mission_demo, tmp_path):
    from winnow.storage.manifest import read_kept

    summary, out = mission_demo
    stages = list(summary["stages"])
    dropped = {stage: {i: r for i, r in _stage_rejects(out, stage).items() if "#" not in i} for stage in stages}
    labels, expected = {}, {}
    for stage, found in dropped.items():  # two positives and one negative among each stage's drops
        for k, doc_id in enumerate(sorted(found)[:3]):
            labels[doc_id] = k < 2
            expected.setdefault(stage, [0, 0])[0 if k < 2 else 1] += 1
    final = sorted({i.split("#")[0] for i in read_kept(resolve(str(out)), stages[-1], ["id"])["id"].to_pylist()})
    for k, doc_id in enumerate(final[:10]):
        labels[doc_id] = k < 7
    labels["never-seen"] = True
    write_jsonl(tmp_path / "labels.jsonl", [json.dumps({"doc": i, "good": int(v)}) for i, v in labels.items()])

    from winnow.evaluate.common import read_labels

    ids, positive = read_labels(str(tmp_path / "labels.jsonl"), None, "good", id_field="doc")
    r = evaluate_run(resolve(str(out)), ids, positive)
    assert r["not_found"] == 1 and r["found"] == len(labels) - 1
    reached_pos = sum(v for i, v in labels.items() if i != "never-seen")
    reached_neg = len(labels) - 1 - reached_pos
    for tally in r["stages"]:
        pos, neg = expected.get(tally.stage, [0, 0])
        assert (sum(tally.positives_dropped.values()), sum(tally.negatives_dropped.values())) == (pos, neg)
        assert (tally.positives_in, tally.negatives_in) == (reached_pos, reached_neg), tally.stage
        reached_pos, reached_neg = reached_pos - pos, reached_neg - neg
        assert set(tally.positives_dropped) <= set(dropped[tally.stage].values())
    assert r["final"]["kept"] == 10 and r["final"]["precision"] == pytest.approx(0.7)
    positives_found = sum(v for i, v in labels.items() if i != "never-seen")
    assert r["final"]["recall"] == pytest.approx(7 / positives_found)
    worst = r["stages"][[t.stage for t in r["stages"]].index(r["worst"][0])]
    assert worst.samples and all(labels[s.id] and dropped[worst.stage][s.id] == s.reason for s in worst.samples)
    assert 0 < r["read"].read < r["read"].total  # the id columns, not the text


# ---------------------------------------------------------------- dedup

def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


@pytest.fixture(scope="module")
def dedup_run(tmp_path_factory, ray_local, prefect_api):
    """A dedup run with loose banding (it merges documents below its 0.8 threshold too) over real text
    and edited copies of it (2% to 25% of the words replaced)."""
    from winnow.flows.curate import curate

    rng = random.Random(7)
    texts = [t for t in web_documents() if len(t.split()) >= 120][:260]
    rows = [{"id": f"doc-{i:04d}", "text": t} for i, t in enumerate(texts)]
    for i in range(150):
        rows.append({"id": f"copy-{i:04d}", "text": edited(texts[i], rng, [0.02, 0.06, 0.12, 0.25][i % 4])})
    rng.shuffle(rows)
    folder = tmp_path_factory.mktemp("dedup")
    write_jsonl(folder / "in" / "a.jsonl", [json.dumps(r) for r in rows])
    stage = {"name": "dedup", "bands": 20, "rows": 5, "threshold": 0.8, "keep": "first"}
    curate({"input": {"uri": str(folder / "in"), "id_field": "id"}, "output": str(folder / "out"),
            "stages": [{"name": "ingest"}, stage], "runtime": {"progress": False}})
    return folder / "out", {r["id"]: r["text"] for r in rows}, DedupConfig.model_validate(stage)


def test_eval_dedup_precision_interval_holds_the_true_precision(dedup_run):
    out, texts, config = dedup_run
    removed = _stage_rejects(out, "dedup")
    table = pq.read_table(out / "dedup" / "rejects", columns=["id", "dup_cluster"])
    survivor = dict(zip(table["id"].to_pylist(), table["dup_cluster"].to_pylist(), strict=True))
    sets = {i: set(shingles(t, config)) for i, t in texts.items()}
    true = sum(_jaccard(sets[i], sets[survivor[i]]) >= 0.8 for i in removed) / len(removed)
    assert 0.3 < true < 0.95  # the loose banding merged some pairs below the threshold
    r = evaluate_dedup(resolve(str(out)), sample=60, missed_sample=40)
    p = r["precision"]
    assert p["sampled"] == 60 and p["removed"] == len(removed) and p["checked"] == 60
    assert p["interval"][0] <= true <= p["interval"][1]
    for a, b, j in p["lowest"]:  # the least similar merged pairs, by brute force
        assert j == pytest.approx(_jaccard(sets[a], sets[b]))
    sources = {row[0]: row for row in r["sources"]["rows"]}
    assert sources[next(iter(sources))][2] == len(removed)  # one source: everything removed is from it
    sizes = [size for part in sorted((out / "dedup").glob("part-*.parquet"))
             for size in pq.read_table(part, columns=["dup_cluster_size"])["dup_cluster_size"].to_pylist()]
    assert [c["size"] for c in r["sources"]["clusters"]] == sorted(sizes, reverse=True)[:5]
    assert all(survivor[m[0]] == c["survivor"] for c in r["sources"]["clusters"] for m in c["members"])


def test_eval_dedup_counts_missed_pairs_like_brute_force(tmp_path):
    rng = random.Random(3)
    config = DedupConfig(threshold=0.7)
    base = [t for t in web_documents() if len(t.split()) >= 100][:120]
    texts = base + [edited(base[i], rng, 0.03) for i in range(0, 60, 2)]  # 30 kept pairs at ~0.8
    ids = [f"k{i:03d}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "kept.parquet", row_group_size=40)
    sets = {i: set(shingles(t, config)) for i, t in zip(ids, texts, strict=True)}
    truth = {i: sum(_jaccard(sets[i], sets[j]) >= 0.7 for j in ids if j != i) for i in ids}
    picked = pa.table({"id": ids, "text": texts}).take(list(range(0, len(ids), 3)))
    m = _missed_pairs([resolve(str(tmp_path / "kept.parquet"))], picked, len(ids), ShingleSets(config), 0.7,
                      batch_size=17, seed=0, counter=ReadCounter())
    sampled = picked["id"].to_pylist()
    assert m["sampled_with_duplicate"] == sum(truth[i] > 0 for i in sampled)
    assert m["pairs"] == pytest.approx(len(ids) * np.mean([truth[i] for i in sampled]) / 2)
    true_pairs = sum(truth.values()) / 2
    assert m["interval"][0] <= true_pairs <= m["interval"][1]
    for a, b, j in m["examples"]:
        assert j == pytest.approx(_jaccard(sets[a], sets[b])) and j >= 0.7


def test_eval_run_and_dedup_read_a_run_on_s3_as_a_local_one(dedup_run, s3_server):
    out, texts, _ = dedup_run
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for path in out.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "winnow-test", f"evaluated/{path.relative_to(out)}")
    remote = resolve("s3://winnow-test/evaluated", S3Config(endpoint_url=s3_server))
    local, there = evaluate_dedup(resolve(str(out)), sample=30, missed_sample=10), evaluate_dedup(
        remote, sample=30, missed_sample=10)
    assert there["precision"] == local["precision"] and there["missed"]["pairs"] == local["missed"]["pairs"]
    ids = sorted(texts)[::10]
    positive = np.array([i.startswith("doc") for i in ids])
    a, b = evaluate_run(resolve(str(out)), ids, positive), evaluate_run(remote, ids, positive)
    assert a["final"] == b["final"] and [t.positives_dropped for t in a["stages"]] == \
        [t.positives_dropped for t in b["stages"]]


# ---------------------------------------------------------------- decontam

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_jsonl(folder / "c4.jsonl", [json.dumps({"text": t}) for t in web_documents()[:400]])
    corpus = read_corpus(str(folder), 400)
    sources = [BenchmarkSource(path=str(data_path(f"reference/llmfoundry_eval_local_data/{name}.jsonl.gz")))
               for name in ("boolq", "arc_easy")]
    items = {f"{s.label}:{row}": text for s in sources for row, text in enumerate(read_items(s))}
    return corpus, sources, items


def _words(text: str) -> int:
    return len(re.findall(r"[^\W_]+", text))


@pytest.mark.parametrize("n", [13, 7])
def test_eval_decontam_recall_per_form_is_as_documented(planted, n):
    corpus, sources, items = planted
    r = evaluate_decontam(DecontaminateConfig(benchmarks=sources, n=n), corpus, items=60, k=8, seed=1)
    forms = r["forms"]
    assert set(forms) == set(FORMS) and all(f["planted"] == 60 for f in forms.values())
    for form in ("verbatim", "recased", "short_lines", "embedded"):
        assert forms[form]["recall_eligible"] == 1.0, form
        assert forms[form]["found"] == forms[form]["eligible"], form  # items under n words: never
    assert forms["every_kth"]["found"] == (forms["every_kth"]["eligible"] if n <= 7 else 0)  # a run of k-1 words
    for plant in r["plants"]:
        if plant.form in ("first_half", "second_half"):
            tokens = items[plant.item].split()
            half = tokens[:(len(tokens) + 1) // 2] if plant.form == "first_half" else tokens[(len(tokens) + 1) // 2:]
            assert plant.found == (_words(" ".join(half)) >= n), (plant.item, plant.form)
    assert r["flag_rate"] < 0.01
