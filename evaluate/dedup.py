"""`winnow eval dedup`: how right a finished run's MinHash dedup was on the user's corpus, by exact
Jaccard similarity of the shingle sets the stage itself used (its normalisation, n-grams and hashes,
from the run's config).

- Precision: a uniform sample of the documents it removed, each against the document kept in its
  place (its cluster's survivor): the share whose Jaccard reaches the stage's `threshold`, with a
  Wilson 95% interval. A survivor from an earlier run (a run index) is not in this run's output and
  is not checked.
- Missed pairs: a uniform sample of the documents it kept, each compared by brute force with every
  document it kept (streamed, batch by batch): the kept pairs at or above `threshold` it should have
  merged. Their number over the whole output is estimated as N x mean(per-document count) / 2, with a
  bootstrap 95% interval.
- Per source: documents in (from the manifests), removed (the `source` column of its rejects) and the
  share removed; the largest clusters (the kept documents with the largest `dup_cluster_size`), with
  a few removed members each.

Reads: the row groups holding the sampled rows, the survivors' text, the `source` and `dup_cluster`
columns of the rejects, the `id` and `dup_cluster_size` columns of the kept documents, and (for
missed pairs) the text of every kept document once, a row group at a time; it holds the samples and
a few counters, never the output.
"""

from __future__ import annotations

import heapq
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.evaluate.common import bootstrap_interval, proportion_interval
from winnow.flows.inspect import ReadCounter, compressed_size, rejects_files, row_groups, snippet
from winnow.stages.dedup import DedupConfig, Shingler
from winnow.storage.fs import Location
from winnow.storage.manifest import MANIFEST, RUN_SUMMARY, kept_files


def dedup_config(out: Location, stage: str) -> DedupConfig:
    """The stage's config as the run ran it (from `_run.json`)."""
    run_file = out.join(RUN_SUMMARY)
    if not run_file.exists():
        raise FileNotFoundError(f"eval dedup: no {RUN_SUMMARY} under {out.uri}: the run has not finished")
    run = json.loads(run_file.read_bytes())
    entries = [s for s in run["config"]["stages"] if s["name"] == stage]
    if not entries:
        raise ValueError(f"eval dedup: the run at {out.uri} has no {stage!r} stage (stages: {list(run['stages'])})")
    return DedupConfig.model_validate(entries[0])


class ShingleSets:
    """Sorted unique shingle hashes per document, as the stage computes them."""

    def __init__(self, config: DedupConfig):
        self.shingler = Shingler(config)

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        hashes, starts = self.shingler.shingle_hashes(pa.array(texts, pa.string()))
        return [np.unique(hashes[starts[i]:starts[i + 1]]) for i in range(len(texts))]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash sets (two empty sets: 0)."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def _positions(files: list[Location], n: int, rng: np.random.Generator) -> tuple[dict[int, dict[int, list[int]]], int]:
    """A uniform sample of n rows over the files (by Parquet metadata only): {file: {row group: [rows]}}."""
    counts = []
    for loc in files:
        with loc.open_read() as f:
            meta = pq.ParquetFile(f).metadata
            counts.append([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    flat = [(i, g, rows) for i, groups in enumerate(counts) for g, rows in enumerate(groups)]
    total = sum(rows for _, _, rows in flat)
    chosen = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.zeros(0, np.int64)
    where: dict[int, dict[int, list[int]]] = {}
    starts = np.cumsum([0] + [rows for _, _, rows in flat])
    for position in chosen.tolist():
        k = int(np.searchsorted(starts, position, side="right")) - 1
        i, g, _ = flat[k]
        where.setdefault(i, {}).setdefault(g, []).append(position - int(starts[k]))
    return where, total


def _sample_rows(files: list[Location], n: int, columns: list[str], rng: np.random.Generator,
                 counter: ReadCounter) -> tuple[pa.Table, int]:
    """n rows drawn uniformly from the files (only the row groups holding them are read), and the total."""
    where, total = _positions(files, n, rng)
    tables = []
    for i, groups in where.items():
        with files[i].open_read() as f:
            pf = pq.ParquetFile(f)
            counter.files[files[i].uri] = compressed_size(pf.metadata)
            for g, rows in groups.items():
                tables.append(pf.read_row_group(g, columns=columns).take(rows))
                meta = pf.metadata.row_group(g)
                counter.read += sum(meta.column(c).total_compressed_size for c in range(meta.num_columns)
                                    if meta.column(c).path_in_schema in columns)
    return (pa.concat_tables(tables) if tables else pa.table({c: [] for c in columns})), total


def _texts_of(files: list[Location], ids: set[str], counter: ReadCounter) -> dict[str, str]:
    wanted = pa.array(sorted(ids), pa.string())
    found: dict[str, str] = {}
    for loc in files:
        for table in row_groups(loc, ["id"], counter, keep=lambda t: pc.is_in(t.column("id"), value_set=wanted),
                                more=["text"]):
            found.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    return found


def evaluate_dedup(out: Location, stage: str = "dedup", sample: int = 200, missed_sample: int = 100,
                   seed: int = 0, batch_size: int = 2048) -> dict:
    """Every figure `winnow eval dedup` prints, as one dict."""
    config = dedup_config(out, stage)
    threshold = float(config.threshold)
    sets = ShingleSets(config)
    rng = np.random.default_rng(seed)
    counter = ReadCounter()
    rejects = rejects_files(out, stage)
    kept = kept_files(out, stage)

    # precision: sampled removed documents against their survivors
    removed, n_removed = _sample_rows(rejects, sample, ["id", "text", "dup_cluster", "reject_detail"], rng, counter)
    earlier = np.array([" from run " in (d or "") for d in removed.column("reject_detail").to_pylist()], bool)
    checked = removed.filter(pa.array(~earlier))
    survivors = _texts_of(kept, set(checked.column("dup_cluster").to_pylist()), counter)
    pairs = []
    for doc_id, text, survivor in zip(*(checked.column(c).to_pylist() for c in ("id", "text", "dup_cluster")),
                                      strict=True):
        if survivor in survivors:
            a, b = sets([text, survivors[survivor]])
            pairs.append((doc_id, survivor, jaccard(a, b)))
    similar = sum(1 for *_, j in pairs if j >= threshold)
    precision = {"removed": n_removed, "sampled": removed.num_rows, "earlier_run": int(earlier.sum()),
                 "checked": len(pairs), "at_or_above": similar,
                 "precision": similar / len(pairs) if pairs else math.nan,
                 "interval": proportion_interval(similar, len(pairs)),
                 "lowest": sorted(pairs, key=lambda p: p[2])[:5],
                 "jaccard_quantiles": np.quantile([j for *_, j in pairs], [0.05, 0.25, 0.5]).tolist() if pairs else []}

    # missed pairs: sampled kept documents against every kept document
    picked, n_kept = _sample_rows(kept, missed_sample, ["id", "text"], rng, counter)
    missed = _missed_pairs(kept, picked, n_kept, sets, threshold, batch_size, seed, counter)

    return {"output": out.uri, "stage": stage, "threshold": threshold, "config": config.keyspace(),
            "precision": precision, "missed": missed, "sources": _per_source(out, stage, rejects, kept, counter),
            "read": counter}


def _missed_pairs(kept: list[Location], picked: pa.Table, n_kept: int, sets: ShingleSets, threshold: float,
                  batch_size: int, seed: int, counter: ReadCounter) -> dict:
    """For each sampled kept document, the kept documents (itself aside) at Jaccard >= threshold, by one
    streaming pass: the sample's shingles sorted with their owner, each batch's shingles looked up in them
    (np.searchsorted), the shared shingles counted per (document, sampled document) pair."""
    ids = picked.column("id").to_pylist()
    sample_sets = sets(picked.column("text").to_pylist())
    m = len(ids)
    sizes = np.array([len(s) for s in sample_sets], dtype=np.int64)
    owner = np.repeat(np.arange(m), sizes)
    flat = np.concatenate(sample_sets) if m else np.zeros(0, np.uint64)
    order = np.argsort(flat, kind="stable")
    flat, owner = flat[order], owner[order]
    counts = np.zeros(m, dtype=np.int64)
    examples: list[tuple[str, str, float]] = []
    for loc in kept:
        for table in row_groups(loc, ["id", "text"], counter):
            for start in range(0, table.num_rows, batch_size):
                part = table.slice(start, batch_size)
                batch = sets(part.column("text").to_pylist())
                batch_ids = part.column("id").to_pylist()
                for doc, sample, j in _similar(batch, flat, owner, sizes, threshold):
                    if batch_ids[doc] != ids[sample]:
                        counts[sample] += 1
                        if len(examples) < 5:
                            examples.append((ids[sample], batch_ids[doc], j))
    if m == 0:
        return {"kept": n_kept, "sampled": 0, "pairs": math.nan, "interval": (math.nan, math.nan), "examples": []}
    estimate = n_kept * counts.mean() / 2
    lo, hi = bootstrap_interval(lambda idx: float(counts[idx].mean()), m, 1000, seed)
    with_duplicate = int((counts > 0).sum())
    return {"kept": n_kept, "sampled": m, "sampled_with_duplicate": with_duplicate,
            "share_with_duplicate": with_duplicate / m, "share_interval": proportion_interval(with_duplicate, m),
            "pairs": estimate, "interval": (n_kept * lo / 2, n_kept * hi / 2), "examples": examples}


def _similar(batch: list[np.ndarray], flat: np.ndarray, owner: np.ndarray, sizes: np.ndarray,
             threshold: float) -> list[tuple[int, int, float]]:
    """(document in batch, sampled document, Jaccard) for every pair at or above threshold."""
    if not batch or len(flat) == 0:
        return []
    lengths = np.array([len(s) for s in batch], dtype=np.int64)
    hashes = np.concatenate(batch)
    docs = np.repeat(np.arange(len(batch)), lengths)
    lo, hi = np.searchsorted(flat, hashes, "left"), np.searchsorted(flat, hashes, "right")
    hits = hi - lo
    if not hits.any():
        return []
    which = np.repeat(np.arange(len(hashes)), hits)
    at = np.arange(hits.sum()) - np.repeat(np.cumsum(hits) - hits, hits) + np.repeat(lo, hits)
    keys = docs[which] * len(sizes) + owner[at]
    pair, shared = np.unique(keys, return_counts=True)
    doc, sample = pair // len(sizes), pair % len(sizes)
    union = lengths[doc] + sizes[sample] - shared
    j = shared / np.maximum(union, 1)
    close = np.flatnonzero(j >= threshold)
    return [(int(doc[k]), int(sample[k]), float(j[k])) for k in close]


def _per_source(out: Location, stage: str, rejects: list[Location], kept: list[Location], counter: ReadCounter,
                clusters: int = 5, members: int = 3) -> dict:
    """Per source: in, removed, share removed; and the largest clusters (the kept documents with the largest
    `dup_cluster_size`, kept to a heap of `clusters`), with a few removed members each."""
    run = json.loads(out.join(RUN_SUMMARY).read_bytes())
    names = list(run["stages"])
    before = run["stages"][names[names.index(stage) - 1]].get("kept_by_source") if names.index(stage) else None
    kept_by_source = json.loads(out.join(stage, MANIFEST).read_bytes()).get("kept_by_source") or {}
    removed_by: dict[str, int] = {}
    for loc in rejects:
        for table in row_groups(loc, ["source"], counter):
            for item in pc.value_counts(table.column("source")).to_pylist():
                removed_by[item["values"]] = removed_by.get(item["values"], 0) + item["counts"]
    rows = []
    for source in sorted(set(kept_by_source) | set(removed_by)):
        removed = removed_by.get(source, 0)
        seen = (before or {}).get(source, kept_by_source.get(source, 0) + removed)
        rows.append((source, seen, removed, removed / seen if seen else math.nan))
    largest: list[tuple[int, str]] = []
    for loc in kept:
        for table in row_groups(loc, ["id", "dup_cluster_size"], counter):
            for doc_id, size in zip(table.column("id").to_pylist(), table.column("dup_cluster_size").to_pylist(),
                                    strict=True):
                if size and size > 1:
                    heapq.heappush(largest, (size, doc_id))
                    if len(largest) > clusters:
                        heapq.heappop(largest)
    largest.sort(key=lambda c: (-c[0], c[1]))
    wanted = pa.array([doc_id for _, doc_id in largest], pa.string())
    shown: dict[str, list[tuple[str, str, str]]] = {doc_id: [] for _, doc_id in largest}
    for loc in rejects:
        for table in row_groups(loc, ["dup_cluster"], counter, more=["id", "source", "text"],
                                keep=lambda t: pc.is_in(t.column("dup_cluster"), value_set=wanted)):
            for row in table.to_pylist():
                if len(shown[row["dup_cluster"]]) < members:
                    shown[row["dup_cluster"]].append((row["id"], row["source"], snippet(row["text"], 120)))
    return {"rows": sorted(rows, key=lambda r: -(0 if math.isnan(r[3]) else r[3])),
            "clusters": [{"survivor": doc_id, "size": size, "members": shown[doc_id]} for size, doc_id in largest]}
