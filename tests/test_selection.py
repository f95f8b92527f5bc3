"""CoLoR-Filter selects target-like text from a real web pool; the preselect stage keeps a top share."""

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_path, documents, text_lines
from support import run_stage
from winnow.flows.demo import article
from winnow.runtime import RuntimeOptions, Shard
from winnow.scorers.lm import train_lm
from winnow.scorers.tokenizer import train_bpe
from winnow.stages.color_filter import ColorFilter, ColorFilterConfig
from winnow.storage.fs import resolve


def boolq_passages():
    out = []
    for line in text_lines("reference/llmfoundry_eval_local_data/boolq.jsonl.gz"):
        out.append(json.loads(line)["query"].removeprefix("Passage: ").split("\nQuestion:")[0])
    return out


@pytest.mark.usefixtures("ray_local")
def test_color_filter_selects_target_like_passages_above_base_rate(tmp_path):
    web = [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")]
    with gzip.open(data_path("web/c4-sample.00000-of-00001.json.gz"), "rt") as f:
        held_out_web = [json.loads(line)["text"] for line in f][:400]
    passages = boolq_passages()
    random.Random(0).shuffle(passages)
    target, held_out_target = passages[:800], passages[800:900]  # the conditional model never sees the pool's

    tokenizer = train_bpe(web + target, 2000, tmp_path / "bpe")
    prior = tmp_path / "prior"
    train_lm(web[:400], prior, tokenizer=tokenizer, epochs=1.0, seq_len=64, batch_size=16, seed=0)
    conditional = tmp_path / "conditional"
    train_lm(target[:400], conditional, init=prior, epochs=1.0, seq_len=64, batch_size=16, seed=0)  # lr 1e-3

    pool = held_out_web + held_out_target
    ids = [f"web-{i}" for i in range(len(held_out_web))] + [f"target-{i}" for i in range(len(held_out_target))]
    order = list(range(len(pool)))
    random.Random(1).shuffle(order)
    shards = []
    for s in range(2):
        sel = order[s::2]
        path = tmp_path / "in" / f"part-{s:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(documents([pool[i] for i in sel], [ids[i] for i in sel]), path)
        shards.append(Shard(path.stem, resolve(str(path))))
    cfg = ColorFilterConfig(name="color_filter", prior=str(prior), conditional=str(conditional), tau=3, device="cpu")
    manifest, _ = run_stage(ColorFilter(cfg), shards, resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="t", progress=False))
    kept = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("part-*.parquet")))
    base_rate = len(held_out_target) / len(pool)
    selected_rate = sum(i.startswith("target") for i in kept.column("id").to_pylist()) / kept.num_rows
    print(f"\nCoLoR-Filter tau=3: kept {kept.num_rows}/{len(pool)}; target-like share {selected_rate:.2%} "
          f"vs base rate {base_rate:.2%} ({selected_rate / base_rate:.1f}x)")
    # Item 4 of issue 13: exactly ⌊500/3⌋ = 166 (a histogram's boundary bin kept 167 or more)
    assert kept.num_rows == len(pool) // 3
    assert selected_rate >= 2 * base_rate
    assert {"color_score", "prior_nll", "conditional_nll"} <= set(kept.schema.names)


    # Per-block selection (n from tau * n): every block of 50 rows of a shard keeps its top 17.
    block_cfg = cfg.model_copy(update={"selection": "block", "block_size": 50})
    run_stage(ColorFilter(block_cfg), shards, resolve(str(tmp_path / "block")), "h2",
              RuntimeOptions(run_id="t2", progress=False))
    for shard in shards:
        out = pq.read_table(tmp_path / "block" / f"{shard.name}.parquet")
        ids = pq.read_table(shard.source.uri, columns=["id"]).column("id").to_pylist()
        scored = {**dict(zip(out.column("id").to_pylist(), out.column("color_score").to_pylist(), strict=True)),
                  **dict(zip(*[pq.read_table(tmp_path / "block" / "rejects").column(c).to_pylist()
                               for c in ("id", "color_score")], strict=True))}
        kept_ids = set(out.column("id").to_pylist())
        for start in range(0, len(ids), 50):
            block = ids[start:start + 50]
            top = sorted(block, key=lambda i: -scored[i])[: -(-len(block) // 3)]
            assert {i for i in block if i in kept_ids} == set(top)


def test_block_top_keeps_the_best_of_every_block_with_ties_to_the_earlier_row():
    from winnow.stages.color_filter import block_top

    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.2, 0.7, 0.3, 0.3, 0.3, 1.0])
    # blocks of 4 at tau 2: [0.1 0.9 0.5 0.5] -> 0.9 and the first 0.5; [0.2 0.7 0.3 0.3] -> 0.7 and
    # the first 0.3; the last block [0.3 1.0] keeps ceil(2 / 2) = 1: the 1.0.
    assert block_top(scores, 4, 2).tolist() == [False, True, True, False, False, True, True, False, False, True]
    assert block_top(scores, 10, 10).tolist() == [False] * 9 + [True]
    assert block_top(np.zeros(0), 4, 2).tolist() == []


@pytest.mark.usefixtures("ray_local")
def test_preselect_trains_from_model_losses_and_keeps_a_character_share(tmp_path):
    from winnow.scorers.preselect import train_preselect
    from winnow.stages.preselect import Preselect, PreselectConfig

    web = [json.loads(line)["text"] for line in text_lines("web/c4_sample.jsonl.gz")]
    tokenizer = train_bpe(web, 1000, tmp_path / "bpe")
    models = []
    for k, epochs in enumerate([0.05, 0.2, 0.8]):  # more training, better "benchmark" score
        models.append(str(tmp_path / f"lm{k}"))
        train_lm(web[:600], models[-1], tokenizer=tokenizer, epochs=epochs, seq_len=64, seed=0)
    corpus = web[600:900]
    card = train_preselect(corpus, models, [0.1, 0.2, 0.3], tmp_path / "preselect.bin")
    print(f"\npreselect: {card['preselect']}")
    assert card["preselect"]["positives"] > 20, card["preselect"]
    assert card["params"]["epoch"] == 3 and card["params"]["lr"] == 0.1
    stage = Preselect(PreselectConfig(name="preselect", scorer={"model": str(tmp_path / "preselect.bin")}))
    path = tmp_path / "part-00000.parquet"
    pq.write_table(documents(corpus), path)
    run_stage(stage, [Shard("part-00000", resolve(str(path)))], resolve(str(tmp_path / "out")), "h",
              RuntimeOptions(run_id="t", progress=False))
    kept = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    share = sum(map(len, kept.column("text").to_pylist())) / sum(map(len, corpus))
    rejected = pq.read_table(tmp_path / "out" / "rejects")
    assert min(kept.column("preselect_score").to_pylist()) >= max(rejected.column("preselect_score").to_pylist())
    # the fewest best-ranked documents holding 10% of the characters: without the last-ranked one it is short
    ranked = sorted(zip(*(kept.column(c).to_pylist() for c in ("preselect_score", "id", "text")), strict=True),
                    key=lambda row: (-row[0], row[1]))
    last = len(ranked[-1][2])
    assert share >= 0.1 > share - last / sum(map(len, corpus)), share


# ---- Item 4 of issue 13: exact top-share selection (no histogram, no score range).

def select(shards, share, share_by="documents", gather_limit=1 << 20, samples=1024):
    """Run the distributed selection in-process over shards of (scores, ids, weights)."""
    from winnow.runtime.selection import find_cutoff
    from winnow.stages.scoring import Cutoff, exact_share, key_table, target_weight

    tables = [key_table(np.array(s, dtype=np.float32), pa.array(i, pa.string()), np.array(w, np.int64))
              for s, i, w in shards]
    total = sum(int(np.sum(w)) for _, _, w in shards)
    target = target_weight(total, exact_share(share), share_by)
    boundary, figures = find_cutoff(lambda fn, *args: [fn(t, *args) for t in tables], target, gather_limit, samples)
    cutoff = Cutoff.at(boundary)
    kept = {i for s, ids, _ in shards for i, k in zip(ids, cutoff.keep(np.array(s, np.float32), ids), strict=True) if k}
    return cutoff, kept, figures


def test_top_share_selection_is_exact_with_ties_broken_by_id():
    shard_a = ([0.9, 0.5, 0.1], ["a", "d", "e"], [1, 1, 1])
    shard_b = ([0.5, 0.5], ["c", "b"], [1, 1])
    cutoff, kept, _ = select([shard_a, shard_b], 0.4)  # 2 of 5: the 0.9, then the lowest id among the 0.5s
    assert (cutoff.score, cutoff.doc_id) == (0.5, "b") and kept == {"a", "b"}
    assert select([shard_a, shard_b], 0.8)[1] == {"a", "b", "c", "d"}
    assert select([shard_a, shard_b], 0.1)[1] == set()  # ⌊0.5⌋ = 0 documents


def test_top_share_selection_keeps_exactly_its_share_of_all_equal_scores():
    ids = [f"doc-{i:02d}" for i in range(10)]
    shards = [([0.7] * 5, ids[5:], [1] * 5), ([0.7] * 5, ids[:5], [1] * 5)]
    assert select(shards, 0.3)[1] == {"doc-00", "doc-01", "doc-02"}  # ⌊10 x 0.3⌋ = 3, not ⌊2.9999⌋


def test_top_share_selection_needs_no_score_range():
    scores = [1e9, -1e12, 3e30, -np.inf, np.nan, 5.0]
    ids = ["a", "b", "c", "d", "e", "f"]
    assert select([(scores, ids, [1] * 6)], 0.5)[1] == {"c", "a", "f"}
    assert select([(scores, ids, [1] * 6)], 5 / 6)[1] == {"c", "a", "f", "b", "d"}  # NaN ranks last


def test_top_share_by_characters_cuts_inside_a_tie_group():
    # ranks: x (0.9, 40 chars), then the tie group at 0.6 by id: p (10), q (30), r (20); then z (0.2, 100).
    # 25% of 200 characters = 50: x (40) + p (10) reaches it exactly; 30% = 60 needs q too (80).
    shards = [([0.9, 0.6, 0.2], ["x", "r", "z"], [40, 20, 100]), ([0.6, 0.6], ["q", "p"], [30, 10])]
    cutoff, kept, figures = select(shards, 0.25, "characters")
    assert kept == {"x", "p"} and figures["kept_weight"] == 50
    cutoff, kept, figures = select(shards, 0.3, "characters")
    assert kept == {"x", "p", "q"} and (cutoff.score, cutoff.doc_id) == (np.float32(0.6), "q")


def test_top_share_selection_refines_over_rounds_to_the_reference_ranking():
    """Many shards, heavy ties and a window far larger than the gather limit: the result equals a full
    sort of (score desc, id asc), the reference, after several rounds."""
    rng = np.random.default_rng(0)
    n = 20_000
    scores = np.round(rng.normal(size=n), 2).astype(np.float32)  # ~700 distinct values: big tie groups
    ids = [f"{rng.integers(1 << 40):012x}-{i}" for i in range(n)]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), ids[i]))
    for share, share_by in [(0.1, "documents"), (0.37, "documents"), (0.5, "characters")]:
        weights = rng.integers(1, 500, n) if share_by == "characters" else np.ones(n, np.int64)
        shards = [(scores[s::7], ids[s::7], weights[s::7]) for s in range(7)]
        _, kept, figures = select(shards, share, share_by, gather_limit=50, samples=8)
        if share_by == "documents":
            expected = {ids[i] for i in order[: int(n * share)]}
        else:
            cumulative = np.cumsum(weights[order])
            expected = {ids[i] for i in order[: int(np.searchsorted(cumulative, np.ceil(weights.sum() * share))) + 1]}
        assert kept == expected and figures["selection_rounds"] > 2 and figures["keys_gathered"] <= 50


# ---- Item 5 of issue 13: CoLoR-Filter's conditional model as the paper makes it.

def test_conditional_lm_training_visits_every_block_once_per_epoch():
    from winnow.scorers.lm import block_batches

    batches = block_batches(10, 3, 2.0, seed=7)
    assert [len(b) for b in batches] == [3, 3, 3, 1] * 2  # epochs do not share a batch
    first, second = sum(batches[:4], []), sum(batches[4:], [])
    assert sorted(first) == sorted(second) == list(range(10)) and first != second  # a new seeded order each epoch
    assert block_batches(10, 3, 2.0, seed=7) == batches
    half = sum(block_batches(10, 4, 0.5, seed=1), [])
    assert len(half) == len(set(half)) == 5  # a fractional epoch: no block twice


def test_conditional_lm_schedule_is_cosine_with_warmup():
    from winnow.scorers.lm import cosine_with_warmup

    # 100 warm-up steps of 1000: 1/100 at the first step, peak at the 100th, a tenth at the end, and
    # halfway through the decay (step 550) the mean of peak and floor.
    assert cosine_with_warmup(0, 1000, 100) == pytest.approx(0.01)
    assert cosine_with_warmup(99, 1000, 100) == pytest.approx(1.0)
    assert cosine_with_warmup(100, 1000, 100) == pytest.approx(1.0)
    assert cosine_with_warmup(550, 1000, 100) == pytest.approx(0.55)
    assert cosine_with_warmup(1000, 1000, 100) == pytest.approx(0.1)


def test_train_lm_fine_tunes_with_the_reference_defaults(tmp_path):
    from winnow.scorers.lm import block_batches

    texts = [article(random.Random(i)) for i in range(40)]
    tokenizer = train_bpe(texts, 500, tmp_path / "bpe")
    prior = train_lm(texts, tmp_path / "prior", tokenizer=tokenizer, epochs=1.0, seq_len=32, batch_size=8)
    figures = train_lm(texts[:20], tmp_path / "conditional", init=tmp_path / "prior", epochs=2.0, seq_len=32,
                       batch_size=8)
    assert prior["lr"] == 3e-3 and figures["lr"] == 1e-3  # color-filter-olmo's fine-tuning learning rate
    assert figures["steps"] == len(block_batches(figures["blocks"], 8, 2.0, seed=0)) == 2 * -(-figures["blocks"] // 8)
    assert figures["warmup_steps"] == min(100, figures["steps"] // 4)


def test_benchmark_items_become_fine_tuning_text_with_the_correct_answer(tmp_path):
    from winnow.scorers.data import benchmark_text, read_benchmark_texts

    item = {"query": "Question: Which gas do plants take in for photosynthesis?",
            "choices": ["oxygen", "carbon dioxide", "helium"], "gold": 1}
    assert benchmark_text(item) == "Question: Which gas do plants take in for photosynthesis? carbon dioxide"
    assert benchmark_text({"context_options": ["The cup fell so the cup", "The cup fell so the floor"],
                           "continuation": "broke.", "gold": 0}) == "The cup fell so the cup broke."
    assert benchmark_text({"context": "The capital of France is", "continuation": "Paris"}) == \
        "The capital of France is Paris"
    with pytest.raises(ValueError, match="not a benchmark item"):
        benchmark_text({"text": "plain"})
    texts = read_benchmark_texts([data_path("reference/llmfoundry_eval_local_data/arc_easy.jsonl.gz")])
    assert len(texts) == 2376
    assert texts[0] == ("Question: Which statement best explains why photosynthesis is the foundation of most food "
                        "webs? Sunlight is the source of energy for nearly all ecosystems.")
