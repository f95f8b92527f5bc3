"""Fuzzy deduplication: MinHash LSH on Ray, with signatures equal to datasketch's.

Text is normalised and split into words with Arrow kernels; each distinct word is hashed once
(64-bit BLAKE2b) and word n-gram shingle hashes are rolled from the word hashes with numpy. A
signature is datasketch's `affine64` MinHash of those shingle hashes: min over shingles of
`a * fmix64(h) + b (mod 2^64)`, with datasketch's own permutations for the seed, so
`datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash, scheme="affine64")` fed the same
shingles gives the same values (tested), and a winnow signature can go into a `MinHashLSH`.
`hashing: datatrove` (with `normalize: datatrove`) computes datatrove's signatures instead, so a run
finds the near-duplicates datatrove's MinHash finds (tested against its `get_signature`).

On Ray (see `Dedup.plan`): signatures per shard -> (band, band hash, node) records shuffled by
band hash -> candidate pairs per bucket -> [optional exact-Jaccard verification] -> connected
components by alternating large-star / small-star rounds on the edge list (Kiveris et al. 2014,
no process ever holds all pairs) -> one survivor per component -> decisions back to each shard.
Only integers (and, for survivors, ids) cross the shuffles; text is read again only to verify.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import sys
import unicodedata
from functools import lru_cache
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import Field, model_validator

from winnow.schemas.config import Fraction, StageConfig
from winnow.stages.base import GlobalStage, Mapper, Plan, PlanContext, Plot, ShardContext, StageResult, concat, split_by
from winnow.storage.index import make_ref

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for rolling word hashes into shingle hashes
_FMIX = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(33), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33))
_MAX_CHUNK_SHINGLES = 1 << 15
_MERSENNE_61 = np.uint64((1 << 61) - 1)

DECISIONS = pa.schema([("_shard", pa.int32()), ("_row", pa.int64()), ("drop", pa.bool_()),
                       ("cluster", pa.string()), ("size", pa.int64()), ("earlier_run", pa.string())])
SURVIVORS = pa.schema([("node", pa.int64()), ("ref", pa.int64())])  # a dropped document -> its survivor's ref
EDGES = pa.schema([("u", pa.int64()), ("v", pa.int64())])


class DedupConfig(StageConfig):
    """MinHash LSH near-duplicate removal (defaults: word 5-grams, 112 permutations = 14 bands x 8 rows)."""

    name: Literal["dedup"] = "dedup"
    normalize: Literal["winnow", "datatrove"] = Field(
        "winnow", description="winnow: the five switches below; datatrove: datatrove's `simplify_text` exactly "
                              "(numbers such as 1,500 become one 0, symbols kept), for runs that must match it")
    lowercase: bool = True
    strip_punctuation: bool = True
    collapse_whitespace: bool = True
    fold_digits: bool = True
    strip_accents: bool = True
    ngram: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(112, ge=2, le=1024)
    bands: int | None = Field(None, ge=1, description="default 14 (with rows 8), or derived from `threshold`")
    rows: int | None = Field(None, ge=1)
    threshold: Fraction = Field(
        0.8, description="Jaccard similarity that makes a duplicate: used by `verify`, and when given without "
                         "bands/rows, to choose them (datasketch's false-positive/negative optimisation)")
    seed: int = Field(1, ge=0, description="seed of the permutations (datasketch's or datatrove's `seed`)")
    hashing: Literal["datasketch", "datatrove"] = Field(
        "datasketch", description="datasketch: its affine64 MinHash of rolled BLAKE2b word hashes (fast, the "
                                  "default); datatrove: its MinHash exactly (SHA-1 of each shingle, its seeded "
                                  "permutations mod 2^61-1), so with normalize: datatrove the same documents collide")
    verify: bool = Field(False, description="check candidate pairs by exact Jaccard of their shingle sets")
    alarm_fraction: Fraction = Field(
        0.5, description="flag a source (in the run table and the report) when this stage removes more than this "
                         "share of its documents, with the largest clusters")
    keep: str = Field("lowest_id", description="survivor: 'lowest_id', 'first' (earliest in input order: shard, then "
                                               "row; datatrove's choice in most clusters) or a numeric column whose "
                                               "highest value wins")
    max_bucket_pairs: int = Field(
        10, ge=1, description="a bucket of up to this many documents yields all its pairs; larger ones a star")

    @model_validator(mode="after")
    def _check_banding(self) -> DedupConfig:
        switches = {"lowercase", "strip_punctuation", "collapse_whitespace", "fold_digits", "strip_accents"}
        if self.normalize == "datatrove" and switches & self.model_fields_set:
            raise ValueError(f"normalize 'datatrove' fixes the normalisation; drop "
                             f"{', '.join(sorted(switches & self.model_fields_set))}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both `bands` and `rows`, or neither (then they come from `threshold`)")
        bands, rows = self.banding()
        if bands * rows > self.num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm {self.num_perm}")
        return self

    def keyspace(self) -> dict:
        """The settings a document's band keys depend on (a run index only matches keys made alike)."""
        bands, rows = self.banding()
        return {**self.model_dump(include={"normalize", "lowercase", "strip_punctuation", "collapse_whitespace",
                                           "fold_digits", "strip_accents", "ngram", "num_perm", "seed", "hashing",
                                           "verify"}), "bands": bands, "rows": rows}

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        if "threshold" in self.model_fields_set:
            from datasketch.lsh import _optimal_param

            return _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)
        return 14, 8


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (the pre-mix datasketch's affine64 scheme applies)."""
    s1, m1, s2, m2, s3 = _FMIX
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def shingle_hash(shingle: bytes) -> int:
    """The 64-bit hash of one shingle (its words joined by single spaces): datasketch's hashfunc."""
    h = 0
    for word in shingle.decode().split(" "):
        h = (h * int(_MULT) + word_hash(word)) & 0xFFFFFFFFFFFFFFFF
    return h


# datatrove's `simplify_text` (datatrove 0.10, `datatrove/utils/text.py`), for `normalize: datatrove`:
# ASCII punctuation, C0/C1 control characters but tab and newline, and a list of CJK/typographic marks
# become spaces; other symbols stay. (Tested equal to datatrove's own constant and function.)
DATATROVE_PUNCTUATION = (string.punctuation + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
                         + "«´»–—’“”„…∶━►、。〈〉《》「」【】！％（），．１：；？～")
_DATATROVE_PUNCTUATION_RE = re.compile("[" + re.escape(DATATROVE_PUNCTUATION) + "]")
_DATATROVE_NUMBER = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?")  # "1,500" and "3.14" are one number


@lru_cache(maxsize=1)
def _nonspacing_marks() -> dict[int, None]:
    """str.translate table deleting every combining mark (category Mn) of this Python's Unicode."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Mn"}


def simplify_text_datatrove(text: str) -> str:
    """datatrove's default `simplify_text`: lowercase; every number (digits with at most one decimal
    separator and fraction) becomes `0`; its punctuation becomes spaces; whitespace runs become one
    space; NFD, then combining marks dropped. (The same result as datatrove's steps, faster: one
    regular expression for the punctuation, `str.split` for whitespace, no mark lookups in ASCII.)"""
    text = _DATATROVE_PUNCTUATION_RE.sub(" ", _DATATROVE_NUMBER.sub("0", text.lower()))
    text = unicodedata.normalize("NFD", " ".join(text.split()))
    return (text if text.isascii() else text.translate(_nonspacing_marks())).strip()


def normalise_texts(texts: pa.Array | pa.ChunkedArray, cfg: DedupConfig) -> pa.Array:
    """Texts as the config compares them (accents, case, digits, punctuation), with Arrow kernels."""
    if cfg.normalize == "datatrove":
        return pa.array([simplify_text_datatrove(t) for t in texts.to_pylist()], pa.string())
    if cfg.strip_accents:
        texts = pc.replace_substring_regex(pc.utf8_normalize(texts, "NFKD"), r"\p{Mn}", "")
    if cfg.lowercase:
        texts = pc.utf8_lower(texts)
    if cfg.fold_digits:
        texts = pc.replace_substring_regex(texts, r"\d", "0")
    if cfg.strip_punctuation:
        texts = pc.replace_substring_regex(texts, r"[\p{P}\p{S}]", " ")
    return texts


def shingle_words(texts: pa.Array | pa.ChunkedArray, cfg: DedupConfig) -> pa.ListArray:
    """The words shingles are made of, per text."""
    texts = normalise_texts(texts, cfg)
    if not cfg.collapse_whitespace and cfg.normalize != "datatrove":  # every single space separates words
        words = pc.split_pattern(texts, " ")
        return words.combine_chunks() if isinstance(words, pa.ChunkedArray) else words
    words = pc.utf8_split_whitespace(texts)
    words = words.combine_chunks() if isinstance(words, pa.ChunkedArray) else words
    flat = words.flatten()
    nonempty = pc.greater(pc.utf8_length(flat), 0)
    docs = pc.list_parent_indices(words).to_numpy()[nonempty.to_numpy(zero_copy_only=False)]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=len(words)))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(nonempty))


def shingles(text: str, cfg: DedupConfig) -> list[bytes]:
    """The shingles of one text as datasketch would be fed them (for tests and verification)."""
    words = shingle_words(pa.array([text]), cfg)[0].as_py()
    return [" ".join(words[i:i + cfg.ngram]).encode() for i in range(len(words) - cfg.ngram + 1)]


class Shingler:
    """Vectorised shingle hashes and MinHash signatures for a batch of texts."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        if cfg.hashing == "datatrove":  # datatrove's MinhashDedupSignature.parameters
            generator = np.random.RandomState(cfg.seed)
            self.a = generator.randint(1, _MERSENNE_61, dtype=np.uint64, size=cfg.num_perm)
            self.b = generator.randint(0, _MERSENNE_61, dtype=np.uint64, size=cfg.num_perm)
        else:
            from datasketch import MinHash  # (imports SciPy: only where signatures are computed)

            perms = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme="affine64").permutations
            self.a, self.b = perms[0].astype(np.uint64), perms[1].astype(np.uint64)

    def shingle_hashes(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Flat shingle hashes and per-document offsets into them (len(texts) + 1)."""
        n = self.cfg.ngram
        words = shingle_words(texts, self.cfg)
        offsets = words.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        flat = words.flatten()
        counts = np.maximum(np.diff(offsets) - n + 1, 0)
        shingle_starts = np.concatenate([[0], np.cumsum(counts)])
        m = len(flat) - n + 1  # n-grams of the flat word list; `positions` are those inside one document
        if m <= 0 or shingle_starts[-1] == 0:
            return np.zeros(0, np.uint64), shingle_starts
        positions = (np.arange(shingle_starts[-1]) - np.repeat(shingle_starts[:-1], counts)
                     + np.repeat(offsets[:-1], counts))
        if self.cfg.hashing == "datatrove":  # the first 8 bytes (little-endian) of the SHA-1 of the words joined
            grams = pc.binary_join_element_wise(*(flat.slice(k, m) for k in range(n)), " ").take(positions)
            digests = b"".join(hashlib.sha1(gram).digest()[:8] for gram in grams.cast(pa.binary()).to_pylist())
            return np.frombuffer(digests, dtype="<u8").astype(np.uint64), shingle_starts
        encoded = pc.dictionary_encode(flat)
        vocab = np.fromiter((word_hash(w) for w in encoded.dictionary.to_pylist()), dtype=np.uint64,
                            count=len(encoded.dictionary))
        word_hashes = vocab[encoded.indices.to_numpy(zero_copy_only=False)]
        rolled = word_hashes[:m].copy()
        for k in range(1, n):
            rolled = rolled * _MULT + word_hashes[k:k + m]
        return rolled[positions], shingle_starts

    def signatures(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """(docs x num_perm) uint64 signatures, and which documents have at least one shingle."""
        hashes, starts = self.shingle_hashes(texts)
        counts = np.diff(starts)
        sig = np.full((len(counts), self.cfg.num_perm), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        datatrove = self.cfg.hashing == "datatrove"
        mixed = hashes if datatrove else fmix64(hashes)
        docs = np.flatnonzero(counts)
        i = 0
        while i < len(docs):  # chunks of whole documents, ~32k shingles each
            j = i + 1
            while j < len(docs) and starts[docs[j] + 1] - starts[docs[i]] <= _MAX_CHUNK_SHINGLES:
                j += 1
            lo, hi = starts[docs[i]], starts[docs[j - 1] + 1]
            permuted = mixed[lo:hi, None] * self.a[None, :] + self.b[None, :]  # wraps mod 2^64, as both do
            if datatrove:
                permuted %= _MERSENNE_61
            sig[docs[i:j]] = np.minimum.reduceat(permuted, starts[docs[i:j]] - lo, axis=0)
            i = j
        return sig, counts > 0

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(docs x bands) uint64 hash of each band's rows."""
        bands, rows = self.cfg.banding()
        keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
        for band in range(bands):
            key = np.full(sig.shape[0], np.uint64(band + 1), dtype=np.uint64)
            for row in range(rows):
                key = key * _MULT + sig[:, band * rows + row]
            keys[:, band] = fmix64(key)
        return keys


def node_ids(shard_index: int, rows: np.ndarray) -> np.ndarray:
    """A document's node id in the graph: shard index in the high 32 bits, row in the low."""
    return (np.int64(shard_index) << np.int64(32)) | rows.astype(np.int64)


def _shard_of(nodes: np.ndarray) -> np.ndarray:
    return nodes >> 32


# ---------------------------------------------------------------- Ray tasks (one per shard / partition)


class SignatureMapper(Mapper):
    """Band records (band, key, node) of one shard, split by key; figures last."""

    def __init__(self, stage: Dedup, shard_index: int, partitions: int):
        self.shard_index, self.partitions = shard_index, partitions
        self.shingler = Shingler(stage.config)
        self.bands, _ = stage.config.banding()
        self.tables, self.rows, self.short = [], 0, 0

    def add(self, table: pa.Table) -> None:
        sig, has_shingles = self.shingler.signatures(table.column("text"))
        rows = np.arange(self.rows, self.rows + table.num_rows)[has_shingles]
        keys = self.shingler.band_keys(sig[has_shingles])
        self.short += int((~has_shingles).sum())
        self.rows += table.num_rows
        self.tables.append(pa.table({
            "band": np.tile(np.arange(self.bands, dtype=np.int32), len(rows)),
            "key": keys.reshape(-1),
            "node": np.repeat(node_ids(self.shard_index, rows), self.bands),
        }))

    def finish(self) -> list:
        records = concat(self.tables) or pa.table({"band": pa.array([], pa.int32()), "key": pa.array([], pa.uint64()),
                                                   "node": pa.array([], pa.int64())})
        return split_by(records, "key", self.partitions) + [{"documents": self.rows,
                                                             "shorter_than_a_shingle": self.short}]


def _bucket_task(p, stage: Dedup, partitions: int, n_shards: int, *parts):
    """Candidate pairs of the buckets in this partition (split by u) and node requests per shard. With a
    run index, the index's documents with the same band keys join the buckets as nodes `-1 - ref`."""
    records = concat(parts)
    empty = EDGES.empty_table()
    figures = {"buckets": 0}
    if records is None or records.num_rows == 0:
        return [empty] * partitions + [pa.table({"node": pa.array([], pa.int64())})] * n_shards + [figures]
    records = pl.from_arrow(records)
    if stage.run.index is not None:
        earlier, figures["index_bytes_read"] = stage.run.index.matching_keys(
            stage.namespace, p, partitions, records["key"].to_numpy(), ["band", "key", "ref"])
        if earlier is not None:
            earlier = pl.from_arrow(earlier).join(records.select("band", "key").unique(), on=["band", "key"],
                                                  how="semi")
            records = pl.concat([records, earlier.select(pl.col("band").cast(pl.Int32), "key",
                                                         node=-1 - pl.col("ref"))])
    buckets = (records.group_by(["band", "key"]).agg(pl.col("node").unique().sort())
               .filter(pl.col("node").list.len() > 1))
    small = buckets.filter(pl.col("node").list.len() <= stage.config.max_bucket_pairs)
    large = buckets.filter(pl.col("node").list.len() > stage.config.max_bucket_pairs)
    pairs = []
    if small.height:  # every pair of a small bucket
        members = small.select(pl.int_range(pl.len()).alias("bucket"), pl.col("node")).explode("node")
        joined = members.join(members, on="bucket", suffix="_2").filter(pl.col("node") < pl.col("node_2"))
        pairs.append(joined.select(pl.col("node").alias("u"), pl.col("node_2").alias("v")))
    if large.height:  # a star on the smallest node: same components, linear in bucket size
        star = large.select(pl.col("node").list.first().alias("u"), pl.col("node").list.slice(1).alias("v"))
        pairs.append(star.explode("v"))
    edges = pl.concat(pairs).unique().to_arrow().cast(EDGES) if pairs else empty
    nodes = pc.unique(pa.concat_arrays([edges.column("u").combine_chunks(), edges.column("v").combine_chunks()]))
    nodes = pa.table({"node": nodes.filter(pc.greater_equal(nodes, 0))})  # this run's documents, to fetch
    figures["buckets"] = buckets.height
    return split_by(edges, "u", partitions) + split_by(nodes, "node", n_shards, key=_shard_of) + [figures]


def _fetch_task(shard_index, shard, stage: Dedup, batch_size: int, partitions: int, *requests):
    """id (+ score, + shingle hash set when verifying) of the requested rows of one shard, by node."""
    wanted = np.unique(np.concatenate([r.column("node").to_numpy() for r in requests] or [np.zeros(0, np.int64)]))
    rows_wanted = wanted & np.int64(0xFFFFFFFF)
    columns = ["id"] + ([stage.score_column] if stage.score_column else []) + (["text"] if stage.config.verify else [])
    shingler = Shingler(stage.config) if stage.config.verify else None
    tables, offset = [], 0
    for batch in shard.tables(batch_size, columns) if len(wanted) else []:
        rows = np.arange(offset, offset + batch.num_rows)
        offset += batch.num_rows
        mask = np.isin(rows, rows_wanted)
        if not mask.any():
            continue
        picked = batch.filter(pa.array(mask))
        out = {"node": node_ids(shard_index, rows[mask]), "id": picked.column("id")}
        if stage.score_column:
            out["score"] = pc.cast(picked.column(stage.score_column), pa.float64())
        if shingler:
            hashes, starts = shingler.shingle_hashes(picked.column("text"))
            sets = [np.unique(hashes[starts[i]:starts[i + 1]]) for i in range(picked.num_rows)]
            out["shingles"] = pa.array(sets, pa.list_(pa.uint64()))
        tables.append(pa.table(out))
    fetched = concat(tables)
    if fetched is None:
        return [None] * partitions + [0]
    return split_by(fetched, "node", partitions) + [fetched.num_rows]


def _both_directions(edges: pl.DataFrame, partitions: int) -> list[pa.Table]:
    directed = pl.concat([edges.select("u", "v"), edges.select(pl.col("v").alias("u"), pl.col("u").alias("v"))])
    return split_by(directed.unique().to_arrow().cast(EDGES), "u", partitions)


def _edges_task(p, stage: Dedup, partitions: int, get_values, fetched: list | None, *parts):
    """Deduplicated candidate pairs of partition p, verified by exact Jaccard when asked; both directions."""
    edges = pl.from_arrow(concat(parts)).unique()
    figures = {"candidate_pairs": edges.height}
    if fetched is not None:
        needed = np.unique(np.concatenate([edges["u"].to_numpy(), edges["v"].to_numpy()]))
        earlier, needed = needed[needed < 0], needed[needed >= 0]
        sets = {}
        if len(earlier):  # an earlier run's document: its shingle set is in the index
            found = stage.run.index.documents(stage.namespace, -1 - earlier, ["ref", "shingles"])
            sets.update(zip((-1 - np.asarray(found.column("ref").to_pylist(), dtype=np.int64)).tolist(),
                            (np.asarray(x, dtype=np.uint64) for x in found.column("shingles").to_pylist()),
                            strict=True))
        sources = {(int(s), int(q)) for s, q in zip(_shard_of(needed), needed % partitions, strict=True)}
        for table in get_values([fetched[s][q] for s, q in sorted(sources)]) if sources else []:
            if table is not None:
                sets.update(zip(table.column("node").to_pylist(),
                                (np.asarray(x, dtype=np.uint64) for x in table.column("shingles").to_pylist()),
                                strict=True))
        similarity = np.array([_jaccard(sets[u], sets[v]) for u, v in edges.iter_rows()], dtype=float)
        edges = edges.filter(pl.Series(similarity >= stage.config.threshold))
        figures["verified_pairs"] = edges.height
    return _both_directions(edges, partitions) + [figures]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 0.0


def _star_task(p, kind: str, partitions: int, *parts):
    """One large-star or small-star step on the directed edges whose source is in partition p.

    Returns the new (both-direction) edges by source partition and a checksum of the input
    edge set, so the driver can stop when a full round changes nothing.
    """
    edges = pl.from_arrow(concat(parts) or EDGES.empty_table())
    unsigned = edges.filter(pl.col("u") < pl.col("v")).select(  # (index documents' nodes are negative)
        pl.col("u").reinterpret(signed=False), pl.col("v").reinterpret(signed=False))
    checksum = int(fmix64(unsigned.select((pl.col("u") * int(_MULT) + pl.col("v")).alias("h"))["h"].to_numpy())
                   .sum(dtype=np.uint64)) if edges.height else 0
    m = edges.group_by("u").agg(pl.min("v").alias("m")).with_columns(pl.min_horizontal("u", "m").alias("m"))
    edges = edges.join(m, on="u")
    if kind == "large":  # link every larger neighbour to the smallest of the neighbourhood
        new = edges.filter(pl.col("v") > pl.col("u")).select(pl.col("v").alias("u"), pl.col("m").alias("v"))
    else:  # link the smaller neighbours and the node itself to the smallest of them
        smaller = edges.filter(pl.col("v") < pl.col("u"))
        new = pl.concat([smaller.select(pl.col("v").alias("u"), pl.col("m").alias("v")),
                         smaller.select(pl.col("u"), pl.col("m").alias("v")).unique()])
    new = new.filter(pl.col("u") != pl.col("v"))
    return _both_directions(new, partitions) + [checksum]


def _label_task(p, stage: Dedup, partitions: int, n_edge_parts: int, *parts):
    """Each node of partition p with its component root (its smallest neighbour or itself) and id."""
    edges = pl.from_arrow(concat(parts[:n_edge_parts]) or EDGES.empty_table())
    attrs = concat(parts[n_edge_parts:])
    labels = edges.group_by("u").agg(pl.min("v").alias("root")).select(
        pl.col("u").alias("node"), pl.min_horizontal("u", "root").alias("root"))
    if labels.height == 0:
        return [None] * partitions + [0]
    if attrs is None:  # only index documents here
        joined = labels.with_columns(id=pl.lit(None, pl.String)).to_arrow()
    else:
        attrs = pl.from_arrow(attrs.drop_columns([c for c in ["shingles"] if c in attrs.schema.names]))
        joined = labels.join(attrs, on="node", how="left").to_arrow()  # an index document has no attributes here
    return split_by(joined, "root", partitions) + [joined.num_rows]


def _survivor_task(p, stage: Dedup, n_shards: int, offsets, *parts):
    """One survivor per component: an earlier run's document if the component has one (the earliest),
    else the lowest id, the first in input order, or the highest score then lowest id. Decisions by
    shard; with a run index also each dropped document's survivor (its ref), for the index's keys."""
    members = concat(parts)
    if members is None or members.num_rows == 0:
        return [DECISIONS.empty_table()] * n_shards + [SURVIVORS.empty_table(), {
            "clusters": 0, "near_duplicates": 0, "earlier_run_duplicates": 0}]
    df = pl.from_arrow(members)
    order = (["score", "id"], [True, False]) if "score" in df.columns else \
        (["node"], [False]) if stage.config.keep == "first" else (["id"], [False])  # node: shard << 32 | row
    df = df.with_columns(earlier=pl.when(pl.col("node") < 0).then(-1 - pl.col("node")))  # the index document's ref
    df = df.sort(["root", "earlier", *order[0]], descending=[False, False, *order[1]], nulls_last=True).with_columns(
        first=pl.col("node").first().over("root"), size=pl.len().over("root"),
        drop=pl.int_range(pl.len()).over("root") > 0)
    earlier = df.filter(pl.col("first") < 0)
    index = stage.run.index
    found = index.lookup(stage.namespace, -1 - earlier["first"].to_numpy()) if index is not None else {}
    named = {-1 - ref: doc for ref, doc in found.items()}
    df = df.with_columns(cluster=pl.col("id").first().over("root"),
                         earlier_run=pl.col("first").replace_strict(
                             {n: r for n, (_, r) in named.items()}, default=None, return_dtype=pl.String))
    if named:
        df = df.with_columns(cluster=pl.col("first").replace_strict(
            {n: i for n, (i, _) in named.items()}, default=pl.col("cluster"), return_dtype=pl.String))
    new = df.filter(pl.col("node") >= 0)
    decisions = pa.table({
        "_shard": pa.array(_shard_of(new["node"].to_numpy()).astype(np.int32)),
        "_row": pa.array(new["node"].to_numpy() & np.int64(0xFFFFFFFF)),
        "drop": new["drop"].to_arrow(), "cluster": new["cluster"].to_arrow().cast(pa.string()),
        "size": new["size"].to_arrow().cast(pa.int64()), "earlier_run": new["earlier_run"].to_arrow(),
    }, schema=DECISIONS)
    dropped = new.filter(pl.col("drop"))
    first = dropped["first"].to_numpy()
    survivor_refs = np.where(first < 0, -1 - first, _refs(index, offsets, first)) if index is not None else first
    figures = {"clusters": int(df["root"].n_unique()), "near_duplicates": dropped.height,
               "earlier_run_duplicates": int((first < 0).sum())}
    survivors = pa.table({"node": dropped["node"].to_arrow(), "ref": pa.array(survivor_refs, pa.int64())},
                         schema=SURVIVORS)
    return split_by(decisions, "_shard", n_shards) + [survivors, figures]


def _refs(index, offsets: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The refs this run's documents get in the index: generation, then their number in the stage's input."""
    nodes = np.maximum(nodes, 0)
    return make_ref(index.generation, offsets[_shard_of(nodes)] + (nodes & np.int64(0xFFFFFFFF)))


def _index_keys_task(p, stage: Dedup, partitions: int, offsets, n_maps: int, *parts):
    """This run's band keys of partition p for the index, each pointing at its document's survivor (a dropped
    document's keys point at the document kept in its place, so later runs find that one through them)."""
    records = concat(parts[:n_maps])
    survivors = concat(parts[n_maps:]) or SURVIVORS.empty_table()
    if records is None:
        records = pa.table({"band": pa.array([], pa.int32()), "key": pa.array([], pa.uint64()),
                            "node": pa.array([], pa.int64())})
    df = pl.from_arrow(records).join(pl.from_arrow(survivors), on="node", how="left")
    refs = np.where(df["ref"].is_null().to_numpy(), _refs(stage.run.index, offsets, df["node"].to_numpy()),
                    df["ref"].fill_null(0).to_numpy())
    table = pl.DataFrame({"band": df["band"].cast(pl.Int16), "key": df["key"], "ref": refs}).unique().to_arrow()
    return stage.run.index.write_keys(stage.namespace, p, partitions, table, sort=["band", "key"])


def _index_docs_task(shard_index, shard, stage: Dedup, batch_size: int, offsets, *decisions):
    """The (ref, id) table of the documents this shard keeps, for the index (with `verify`, and their shingle
    hash sets, which later runs verify their candidates against)."""
    dropped = concat(decisions)
    drop = dropped.filter(dropped.column("drop")).column("_row").to_numpy() if dropped is not None else []
    verify = Shingler(stage.config) if stage.config.verify else None
    ids, sets, offset = [], [], 0
    for table in shard.tables(batch_size, ["id", "text"] if verify else ["id"]):
        keep = ~np.isin(np.arange(offset, offset + table.num_rows), drop)
        offset += table.num_rows
        kept = table.filter(pa.array(keep))
        ids.append(kept.column("id").cast(pa.string()).combine_chunks())
        if verify:
            hashes, starts = verify.shingle_hashes(kept.column("text"))
            sets += [np.unique(hashes[starts[i]:starts[i + 1]]) for i in range(kept.num_rows)]
    rows = np.flatnonzero(~np.isin(np.arange(offset), drop))
    refs = _refs(stage.run.index, offsets, node_ids(shard_index, rows))
    extra = {"shingles": pa.array(sets, pa.list_(pa.uint64()))} if verify else {}
    ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    return stage.run.index.write_docs(stage.namespace, shard_index, refs, ids, **extra)


def connected_components(ctx: PlanContext, edges: list[list]) -> tuple[list[list], int]:
    """Alternate large-star and small-star steps until a full round leaves the edge set unchanged.

    `edges` holds both directions of each edge, partitioned by source node. The result is one
    star per component, every node linked to the component's smallest node; returns it and the
    number of rounds.
    """
    previous, rounds, partitions = None, 0, ctx.partitions
    while True:
        edges, checks = ctx.exchange("components", _star_task, edges, partitions, "large", partitions)
        checksum = sum(checks) & 0xFFFFFFFFFFFFFFFF
        edges, _ = ctx.exchange("components", _star_task, edges, partitions, "small", partitions)
        rounds += 1
        if checksum == previous:
            return edges, rounds
        previous = checksum


# ---------------------------------------------------------------- the stage


class Dedup(GlobalStage):
    Config = DedupConfig
    plots = (Plot("dup_cluster_size", "documents per near-duplicate cluster (clusters of 2 or more)",
                  "Near-duplicate clusters", kept_only=True, above=1, log_counts=True, integer=True),)

    def __init__(self, config: DedupConfig, run=None):
        super().__init__(config, run)
        self.score_column = None if config.keep in ("lowest_id", "first") else config.keep
        keyspace = config.keyspace()
        self.namespace = "dedup/" + hashlib.sha256(json.dumps(keyspace, sort_keys=True).encode()).hexdigest()[:12]
        if self.run.index is not None:
            self.run.index.check_keyspace(self.name, self.namespace, keyspace)

    map_columns = ["text"]

    def mapper(self, shard: ShardContext) -> SignatureMapper:
        return SignatureMapper(self, shard.index, shard.partitions)

    def plan(self, ctx: PlanContext) -> Plan:
        shards, P = ctx.shards, ctx.partitions
        n_shards = len(shards)
        me = ctx.put(self)
        bands, rows = self.config.banding()
        figures = {"bands": bands, "rows": rows, "partitions": P}

        parts, counts = ctx.map()
        figures["documents"] = sum(c["documents"] for c in counts)
        figures["shorter_than_a_shingle"] = sum(c["shorter_than_a_shingle"] for c in counts)
        out, bucket_figures = ctx.exchange("bucket", _bucket_task, parts, P + n_shards, me, P, n_shards)
        candidates = [o[:P] for o in out]
        requests = {s.name: [o[P + i] for o in out] for i, s in enumerate(shards)}
        fetched, _ = ctx.map_shards("fetch", _fetch_task, P, me, ctx.batch_size, P, per_shard_args=requests)
        edges, pair_figures = ctx.exchange("verify" if self.config.verify else "pairs", _edges_task, candidates, P,
                                           me, P, ctx.get_values(), fetched if self.config.verify else None)
        for key in ("candidate_pairs", "verified_pairs"):
            if key in pair_figures[0]:
                figures[key] = sum(f[key] for f in pair_figures)

        edges, figures["component_rounds"] = connected_components(ctx, edges)

        labels, _ = ctx.exchange("label", _label_task, edges + fetched, P, me, P, len(edges))
        offsets = np.concatenate([[0], np.cumsum([c["documents"] for c in counts])[:-1]]).astype(np.int64)
        survivors, survivor_figures = ctx.exchange("survivor", _survivor_task, labels, n_shards + 1, me, n_shards,
                                                   offsets)
        for key in ("clusters", "near_duplicates", "earlier_run_duplicates"):
            figures[key] = sum(f[key] for f in survivor_figures)
        decisions = {s.name: [o[i] for o in survivors] for i, s in enumerate(shards)}
        if self.run.index is not None:
            figures["index_bytes_read"] = sum(f.get("index_bytes_read", 0) for f in bucket_figures)
            figures["index"] = self._append_to_index(ctx, me, parts, [o[n_shards] for o in survivors], decisions,
                                                     offsets)
        else:
            del figures["earlier_run_duplicates"]
        return Plan(decisions, figures)

    def _append_to_index(self, ctx: PlanContext, me, parts: list[list], survivors: list, decisions: dict,
                         offsets: np.ndarray) -> dict:
        """This run's parts of the index: every band key (pointing at its document's survivor), and the
        (ref, id) of every document kept."""
        keys = ctx.gather("index", _index_keys_task, [(p, me, ctx.partitions, offsets, len(parts),
                                                        *[producer[p] for producer in parts], *survivors)
                                                       for p in range(ctx.partitions)])
        _, docs = ctx.map_shards("index", _index_docs_task, 0, me, ctx.batch_size, offsets, per_shard_args=decisions)
        return {"namespace": self.namespace, "keyspace": self.config.keyspace(),
                "keys": [k for part in keys for k in part], "docs": docs}

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions: pa.Table | None) -> StageResult:
        n = table.num_rows
        cluster = np.array(table.column("id").to_pylist(), dtype=object)
        size = np.ones(n, dtype=np.int64)
        drop = np.zeros(n, dtype=bool)
        earlier = np.full(n, None, dtype=object)
        if decisions is not None and decisions.num_rows:
            local = decisions.column("_row").to_numpy() - row_offset
            mine = (local >= 0) & (local < n)
            idx = local[mine]
            cluster[idx] = np.array(decisions.column("cluster").to_pylist(), dtype=object)[mine]
            size[idx] = decisions.column("size").to_numpy()[mine]
            drop[idx] = decisions.column("drop").to_numpy(zero_copy_only=False)[mine]
            earlier[idx] = np.array(decisions.column("earlier_run").to_pylist(), dtype=object)[mine]
        annotated = table.append_column("dup_cluster", pa.array(cluster.tolist(), pa.string())) \
                         .append_column("dup_cluster_size", pa.array(size, pa.int64()))
        dropped = annotated.filter(pa.array(drop))
        details = [f"duplicate of {c}{f' from run {r}' if r else ''} (cluster of {s})"
                   for c, s, r in zip(cluster[drop], size[drop], earlier[drop], strict=True)]
        return StageResult.of(self.name, n, annotated.filter(pa.array(~drop)), dropped,
                              ["near_duplicate"] * int(drop.sum()), details)
