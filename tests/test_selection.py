"""CoLoR-Filter selects target-like text from a real web pool; the preselect stage keeps a top share."""

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import documents, shared
from winnow.schemas.config import ColorFilterConfig
from winnow.scorers.lm import train_lm
from winnow.scorers.tokenizer import train_bpe
from winnow.stages.color_filter import ColorFilter
from winnow.stages.runtime import RuntimeOptions, Shard, run_stage
from winnow.storage.fs import resolve


def boolq_passages():
    out = []
    for line in shared("reference/llmfoundry_eval_local_data/boolq.jsonl").open():
        out.append(json.loads(line)["query"].removeprefix("Passage: ").split("\nQuestion:")[0])
    return out


@pytest.mark.usefixtures("ray_local")
def test_color_filter_selects_target_like_passages_above_base_rate(tmp_path):
    web = [json.loads(line)["text"] for line in shared("web/c4_train_first1k/c4_sample.jsonl").open()]
    with gzip.open(shared("web/olmo_c4_sample_1k/c4-sample.00000-of-00001.json.gz"), "rt") as f:
        held_out_web = [json.loads(line)["text"] for line in f][:400]
    passages = boolq_passages()
    random.Random(0).shuffle(passages)
    target, held_out_target = passages[:800], passages[800:900]  # the conditional model never sees the pool's

    tokenizer = train_bpe(web + target, 2000, tmp_path / "bpe")
    prior = tmp_path / "prior"
    train_lm(web, prior, tokenizer=tokenizer, epochs=1.0, seq_len=64, batch_size=16, seed=0)
    conditional = tmp_path / "conditional"
    train_lm(target, conditional, init=prior, epochs=1.0, seq_len=64, batch_size=16, lr=1e-3, seed=0)

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
    cfg = ColorFilterConfig(name="color_filter", prior=str(prior), conditional=str(conditional), tau=4, device="cpu")
    manifest, _ = run_stage(ColorFilter(cfg), shards, resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="t", progress=False))
    kept = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("part-*.parquet")))
    base_rate = len(held_out_target) / len(pool)
    selected_rate = sum(i.startswith("target") for i in kept.column("id").to_pylist()) / kept.num_rows
    print(f"\nCoLoR-Filter tau=4: kept {kept.num_rows}/{len(pool)}; target-like share {selected_rate:.2%} "
          f"vs base rate {base_rate:.2%} ({selected_rate / base_rate:.1f}x)")
    assert 0.25 <= kept.num_rows / len(pool) < 0.27
    assert selected_rate >= 2 * base_rate
    assert {"color_score", "prior_nll", "conditional_nll"} <= set(kept.schema.names)

    # Per-block selection (n from tau * n): every block of 50 rows of a shard keeps its top 13.
    block_cfg = cfg.model_copy(update={"selection": "block", "block_size": 50})
    run_stage(ColorFilter(block_cfg), shards, resolve(str(tmp_path / "block")), "h2",
              RuntimeOptions(run_id="t2", progress=False))
    for shard in shards:
        out = pq.read_table(tmp_path / "block" / f"{shard.name}.parquet")
        ids = pq.read_table(shard.source.uri, columns=["id"]).column("id").to_pylist()
        scored = {**dict(zip(out.column("id").to_pylist(), out.column("color_score").to_pylist())),
                  **dict(zip(*[pq.read_table(tmp_path / "block" / "rejects").column(c).to_pylist()
                               for c in ("id", "color_score")]))}
        kept_ids = set(out.column("id").to_pylist())
        for start in range(0, len(ids), 50):
            block = ids[start:start + 50]
            top = sorted(block, key=lambda i: -scored[i])[: -(-len(block) // 4)]
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
    from winnow.schemas.config import PreselectConfig
    from winnow.scorers.preselect import train_preselect
    from winnow.stages.preselect import Preselect

    web = [json.loads(line)["text"] for line in shared("web/c4_train_first1k/c4_sample.jsonl").open()]
    tokenizer = train_bpe(web, 1000, tmp_path / "bpe")
    models = []
    for k, epochs in enumerate([0.05, 0.3, 1.5]):  # more training, better "benchmark" score
        models.append(str(tmp_path / f"lm{k}"))
        train_lm(web[:600], models[-1], tokenizer=tokenizer, epochs=epochs, seq_len=64, seed=0)
    corpus = web[600:]
    card = train_preselect(corpus, models, [0.1, 0.2, 0.3], tmp_path / "preselect.bin")
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
    assert 0.1 <= share < 0.2, share  # the boundary score bin is kept whole
    assert min(kept.column("preselect_score").to_pylist()) > max(rejected.column("preselect_score").to_pylist())
