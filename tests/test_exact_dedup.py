import pyarrow as pa

from conftest import documents
from winnow.stages.exact_dedup import ExactDedup, ExactDedupConfig


def docs(ids, texts, **extra):
    return documents(texts, ids, **extra)


def run_local(stage, shards):
    """The stage's map -> reduce -> apply on in-memory shards (what the runtime does on Ray)."""
    keys = []
    for i, table in enumerate(shards):
        k = stage.map_keys(table.select(stage.map_columns))
        k = k.append_column("_shard", pa.array([i] * k.num_rows, pa.int32()))
        keys.append(k.append_column("_row", pa.array(range(k.num_rows), pa.int64())))
    decisions, stats = stage.reduce(pa.concat_tables(keys))
    results = [stage.apply_decisions(t, 0, decisions.filter(pa.compute.equal(decisions["_shard"], i)))
               for i, t in enumerate(shards)]
    return results, stats


def test_one_survivor_per_group_lowest_id_across_shards():
    stage = ExactDedup(ExactDedupConfig(name="exact_dedup"))
    a = docs(["b1", "b2", "b3"], ["same text", "unique one", "other  text\n"])
    b = docs(["a1", "a2"], ["same   text", "other text"])
    (ra, rb), stats = run_local(stage, [a, b])
    assert ra.kept.column("id").to_pylist() == ["b2"]
    assert rb.kept.column("id").to_pylist() == ["a1", "a2"]
    assert ra.rejects.column("reject_detail").to_pylist() == ["duplicate of a1", "duplicate of a2"]
    assert set(ra.rejects.column("reject_reason").to_pylist()) == {"exact_duplicate"}
    assert stats == {"duplicate_groups": 2}


def test_survivor_first_in_input_order():
    """'first': the earliest row of the earliest shard, whatever the ids."""
    stage = ExactDedup(ExactDedupConfig(name="exact_dedup", keep="first"))
    a = docs(["z1", "z2"], ["unique one", "same text"])
    b = docs(["a1"], ["same text"])
    (ra, rb), _ = run_local(stage, [a, b])
    assert ra.kept.column("id").to_pylist() == ["z1", "z2"] and rb.kept.num_rows == 0
    assert rb.rejects.column("reject_detail").to_pylist() == ["duplicate of z2"]


def test_normalisation_modes_and_score_survivor():
    none = ExactDedup(ExactDedupConfig(name="exact_dedup", normalize="none"))
    (r,), _ = run_local(none, [docs(["1", "2"], ["Same text", "Same  text"])])
    assert r.kept.num_rows == 2
    lower = ExactDedup(ExactDedupConfig(name="exact_dedup", normalize="lower_whitespace"))
    (r,), _ = run_local(lower, [docs(["1", "2"], ["Same text", "same  TEXT"])])
    assert r.kept.num_rows == 1
    by_score = ExactDedup(ExactDedupConfig(name="exact_dedup", keep="quality_score"))
    (r,), _ = run_local(by_score, [docs(["1", "2", "3"], ["t", "t", "t"], quality_score=[0.2, 0.9, 0.5])])
    assert r.kept.column("id").to_pylist() == ["2"]
    assert r.rejects.column("reject_detail").to_pylist() == ["duplicate of 2", "duplicate of 2"]
