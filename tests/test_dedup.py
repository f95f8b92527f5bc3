"""MinHash dedup: datasketch-equal signatures, LSH compatibility, and accuracy on real text."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from conftest import documents, web_documents
from dedup_eval import brute_force_truth, edited_corpus
from support import run_stage
from winnow.flows.demo import article
from winnow.runtime import RuntimeOptions, Shard
from winnow.schemas.config import ConfigError, parse_config
from winnow.stages.dedup import Dedup, DedupConfig, Shingler, shingle_hash, shingles
from winnow.storage.fs import resolve

DEFAULT = DedupConfig(name="dedup")


def generated(n, seed=0):
    rng = random.Random(seed)
    return [article(rng) for _ in range(n)]


def datasketch_minhash(text, cfg):
    mh = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=shingle_hash, scheme="affine64")
    for shingle in shingles(text, cfg):
        mh.update(shingle)
    return mh


@pytest.mark.parametrize("cfg", [DEFAULT, DedupConfig(name="dedup", ngram=3, num_perm=64, bands=8, rows=8, seed=7,
                                                       lowercase=False, fold_digits=False, strip_accents=False)])
def test_signatures_equal_datasketch_for_every_value(cfg):
    texts = generated(20) + ["Café ÉCOLE 2024 naïve résumé, déjà-vu!  " * 5, "too short", ""]
    try:
        texts += web_documents()[:80]
    except pytest.skip.Exception:
        pass  # the generated and hand-written texts still cover the comparison
    sig, has_shingles = Shingler(cfg).signatures(pa.array(texts))
    for i, text in enumerate(texts):
        expected = datasketch_minhash(text, cfg)
        assert has_shingles[i] == bool(shingles(text, cfg))
        np.testing.assert_array_equal(sig[i], expected.hashvalues, err_msg=f"document {i}")


def test_winnow_signatures_go_into_a_datasketch_lsh():
    texts = generated(30, seed=3)
    near = texts[0].replace(".", " indeed.", 1)
    sig, _ = Shingler(DEFAULT).signatures(pa.array(texts + [near]))
    lsh = MinHashLSH(num_perm=DEFAULT.num_perm, params=DEFAULT.banding())
    for i in range(len(texts)):
        lsh.insert(f"doc{i}", MinHash(num_perm=DEFAULT.num_perm, seed=DEFAULT.seed, hashvalues=sig[i],
                                      scheme="affine64"))
    query = MinHash(num_perm=DEFAULT.num_perm, seed=DEFAULT.seed, hashvalues=sig[-1], scheme="affine64")
    assert "doc0" in lsh.query(query)


def test_normalisation_switches():
    cfg = DedupConfig(name="dedup", ngram=2)
    assert shingles("Héllo, WORLD 42!", cfg) == [b"hello world", b"world 00"]
    raw = DedupConfig(name="dedup", ngram=2, lowercase=False, strip_punctuation=False, fold_digits=False,
                      strip_accents=False)
    assert shingles("Héllo, WORLD 42!", raw) == ["Héllo, WORLD".encode(), b"WORLD 42!"]


def test_banding_defaults_and_threshold_optimisation():
    assert DEFAULT.banding() == (14, 8)
    from datasketch.lsh import _optimal_param

    assert DedupConfig(name="dedup", threshold=0.7).banding() == _optimal_param(0.7, 112, 0.5, 0.5)
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        parse_config({"input": {"uri": "/d"}, "output": "/o",
                      "stages": [{"name": "ingest"}, {"name": "dedup", "bands": 20, "rows": 8}]})


def write_shards(directory, ids, texts, n_shards, **extra):
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(n_shards):
        sel = list(range(s, len(texts), n_shards))
        table = documents([texts[i] for i in sel], [ids[i] for i in sel],
                          **{name: [values[i] for i in sel] for name, values in extra.items()})
        path = directory / f"part-{s:05d}.parquet"
        pq.write_table(table, path)
        shards.append(Shard(f"part-{s:05d}", resolve(str(path))))
    return shards


def run_dedup(tmp_path, cfg, ids, texts, n_shards=4, **extra):
    shards = write_shards(tmp_path / "in", ids, texts, n_shards, **extra)
    manifest, _ = run_stage(Dedup(cfg), shards, resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="t", progress=False, shuffle_partitions=3))
    kept = pa.concat_tables(pq.read_table(p, columns=["id", "dup_cluster", "dup_cluster_size"])
                            for p in sorted((tmp_path / "out").glob("part-*.parquet")))
    rejects = pq.read_table(tmp_path / "out" / "rejects") if manifest.rows_rejected else None
    return manifest, kept, rejects


@pytest.mark.usefixtures("ray_local")
def test_clusters_survivors_and_short_documents(tmp_path):
    base = generated(6, seed=11)
    texts = base + [base[0] + " Extra closing words here.", base[0].replace("the", "a", 1), "tiny doc", "hi"]
    ids = [f"d{i}" for i in range(len(texts))]
    manifest, kept, rejects = run_dedup(tmp_path, DedupConfig(name="dedup", verify=True), ids, texts)
    assert manifest.rows_in == len(texts) == manifest.rows_out + manifest.rows_rejected
    assert manifest.extra["shorter_than_a_shingle"] == 2
    assert sorted(rejects.column("id").to_pylist()) == ["d6", "d7"]
    assert set(rejects.column("reject_detail").to_pylist()) == {"duplicate of d0 (cluster of 3)"}
    rows = {r["id"]: r for r in kept.to_pylist()}
    assert rows["d0"]["dup_cluster"] == "d0" and rows["d0"]["dup_cluster_size"] == 3
    assert rows["d8"]["dup_cluster_size"] == 1 and "d9" in rows  # short documents kept


@pytest.mark.usefixtures("ray_local")
def test_survivor_by_score(tmp_path):
    text = generated(1, seed=5)[0]
    texts = [text, text + " And one more line.", text.replace("the", "this", 1)]
    _, kept, _ = run_dedup(tmp_path, DedupConfig(name="dedup", keep="quality_score"), ["a", "b", "c"], texts,
                           n_shards=2, quality_score=[0.1, 0.9, 0.5])
    assert kept.column("id").to_pylist() == ["b"]


@pytest.mark.usefixtures("ray_local")
def test_survivor_first_in_input_order(tmp_path):
    """Shards round-robin: shard 0 holds q, y; shard 1 holds b. y (shard 0, row 1) comes before b
    (shard 1, row 0) in input order, though b has the lower id."""
    text, other = generated(2, seed=7)
    texts = [other, text, text + " And one more line."]
    for keep, survivor in [("first", "y"), ("lowest_id", "b")]:
        _, kept, rejects = run_dedup(tmp_path / keep, DedupConfig(name="dedup", keep=keep), ["q", "b", "y"], texts,
                                     n_shards=2)
        assert sorted(kept.column("id").to_pylist()) == sorted(["q", survivor])
        assert rejects.column("reject_detail").to_pylist() == [f"duplicate of {survivor} (cluster of 2)"]


@pytest.mark.usefixtures("ray_local")
def test_precision_and_recall_on_edited_real_documents(tmp_path):
    cfg_verify = DedupConfig(name="dedup", verify=True, threshold=0.8, bands=14, rows=8)
    ids, texts = edited_corpus(web_documents(), copies=600, seed=1)
    truth = brute_force_truth(ids, texts, cfg_verify)
    assert sum(len(c) - 1 for c in truth.components) > 200  # the corpus really has work for the stage
    figures = {}
    for verify in (True, False):
        cfg = cfg_verify.model_copy(update={"verify": verify})
        _, _, rejects = run_dedup(tmp_path / str(verify), cfg, ids, texts)
        figures[verify] = truth.score(ids, set(rejects.column("id").to_pylist()))
    print(f"\nthreshold 0.8, 14x8: verify precision {figures[True][0]:.4f} recall {figures[True][1]:.4f}; "
          f"no verify precision {figures[False][0]:.4f} recall {figures[False][1]:.4f}")
    assert figures[True][0] >= 0.99 and figures[True][1] >= 0.90
    assert figures[False][1] >= figures[True][1]  # verification only removes candidates


@pytest.mark.usefixtures("ray_local")
def test_connected_components_on_long_chains_and_separate_groups():
    import polars as pl
    import ray

    from winnow.runtime.shuffle import RayPlanContext
    from winnow.stages.dedup import EDGES, Dedup, DedupConfig, connected_components

    rng = random.Random(4)
    path = list(range(100, 160))
    rng.shuffle(path)  # a 60-node chain visited in random order: long diameter, unsorted labels
    pairs = list(zip(path, path[1:], strict=False)) + [(5, 9), (9, 7), (30, 31)]
    P = 3
    directed = pl.DataFrame({"u": [a for a, b in pairs] + [b for a, b in pairs],
                             "v": [b for a, b in pairs] + [a for a, b in pairs]})
    parts = [[ray.put(directed.filter(pl.col("u") % P == p).to_arrow().cast(EDGES)) for p in range(P)]]
    ctx = RayPlanContext(Dedup(DedupConfig()), [], RuntimeOptions(run_id="t", shuffle_partitions=P))
    edges, rounds = connected_components(ctx, parts)
    result = pl.concat([pl.from_arrow(t) for producer in edges for t in ray.get(producer)])
    root = dict(result.group_by("u").agg(pl.min("v")).iter_rows())
    assert all(min(root[n], n) == 100 for n in path)
    assert min(root[9], 9) == min(root[7], 7) == 5 and root[31] == 30
    assert 1 < rounds < 15


def test_datatrove_normalisation_gives_datatroves_shingles():
    """Item 8 of issue 13: `normalize: datatrove` reproduces datatrove's `simplify_text`: a number such as
    1,500 is one `0` token (winnow's default folds it to the two words `0 000`), symbols are kept."""
    from winnow.stages.dedup import simplify_text_datatrove

    cfg = DedupConfig(name="dedup", normalize="datatrove", ngram=3)
    text = "The price rose to 1,500 dollars — Café crème © ACME™\tnow 3.50%!"
    # hand-worked: lowercase; 1,500 and 3.50 -> 0; "—", "!" and "%" -> spaces; NFD, accents dropped; © ™ kept
    words = "the price rose to 0 dollars cafe creme © acme™ now 0".split()
    assert simplify_text_datatrove(text) == " ".join(words)
    assert shingles(text, cfg) == [" ".join(words[i:i + 3]).encode() for i in range(len(words) - 2)]
    assert b"to 0 000" in shingles(text, DEFAULT.model_copy(update={"ngram": 3}))  # today's default differs
    with pytest.raises(ValueError, match="fixes the normalisation; drop fold_digits"):
        DedupConfig(name="dedup", normalize="datatrove", fold_digits=False)


def test_datatrove_normalisation_equals_the_reference_on_real_text():
    """The same text and 5-gram shingle sets as datatrove's own `simplify_text` (then split on
    whitespace) on real web documents, Greek final sigma and Arabic-Indic digits included."""
    text_module = pytest.importorskip("datatrove.utils.text", reason="datatrove (dev extra) is the reference")
    from winnow.stages.dedup import DATATROVE_PUNCTUATION, simplify_text_datatrove

    assert sorted(DATATROVE_PUNCTUATION) == sorted(text_module.PUNCTUATION)
    texts = web_documents() + ["ΟΔΟΣ ΣΟΦΟΣ, ٣٬٥ and ١٢٣.٤٥ — İstanbul’s «café» ½ ２０２４年",
                               "\x00\x85 tab\there\u2028line"]
    cfg = DedupConfig(name="dedup", normalize="datatrove")
    differ = 0
    for text in texts:
        expected = text_module.simplify_text(text)
        assert simplify_text_datatrove(text) == expected
        words = expected.split()
        reference = {" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)}
        assert set(shingles(text, cfg)) == reference
        differ += set(shingles(text, DEFAULT)) != reference
    assert differ > len(texts) // 10  # real documents on which winnow's default shingles differ


def test_datatrove_hashing_gives_datatroves_signatures():
    """`hashing: datatrove` (with `normalize: datatrove`) computes datatrove's MinHash signature exactly:
    its SHA-1 shingle hashes, its permutations for the seed, its arithmetic mod 2^61-1. Reference:
    datatrove's own `get_signature` over its own shingle hashes of the whitespace-split simplified text."""
    minhash = pytest.importorskip("datatrove.pipeline.dedup.minhash", reason="datatrove (dev extra) is the reference")
    from datatrove.utils.hashes.sha1 import sha1_hash64
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import simplify_text

    texts = web_documents()[:200] + ["too short to shingle"]
    for seed in (1, 7):
        config = minhash.MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=seed,
                                       hash_config=HashConfig(hash_fc="sha1", precision=64))
        reference = minhash.MinhashDedupSignature(output_folder="unused", config=config)
        cfg = DedupConfig(name="dedup", normalize="datatrove", hashing="datatrove", seed=seed)
        sig, has_shingles = Shingler(cfg).signatures(pa.array(texts))
        for text, row, has in zip(texts, sig, has_shingles, strict=True):
            words = simplify_text(text).split()
            hashes = np.array([sha1_hash64(" ".join(words[i:i + 5])) for i in range(len(words) - 4)], np.uint64)
            assert has == (hashes.size > 0)
            if has:
                assert row.tolist() == [v for band in reference.get_signature(hashes.reshape(-1, 1)) for v in band]
    default = DedupConfig(name="dedup", normalize="datatrove", seed=7)
    assert not (Shingler(default).signatures(pa.array(texts[:1]))[0] == sig[:1]).all()  # datasketch's differ
