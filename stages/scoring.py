"""What model-scored stages (quality, toxicity) share: scoring batches inside Ray workers with a
model loaded once per worker, and keeping a top share of the whole corpus.

A top share is found without gathering scores in one process: each shard's scoring task returns
a fixed-size histogram of its scores (weighted by documents or characters), the histograms are
summed, and the cut-off is the lower edge of the bin where the cumulative share from the top
reaches the target (the boundary bin is kept whole, so the share kept can exceed the target by at
most one bin of 2^16). Scores stay in Ray's object store and are attached to their shard's rows
when the shard is written, so the model runs once per document.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from winnow.scorers import load_scorer
from winnow.stages.base import GlobalStage, StageResult
from winnow.storage.shards import iter_parquet_batches

HISTOGRAM_BINS = 1 << 16


class ScoreStage(GlobalStage):
    """Subclasses set `score_columns(scorer, texts) -> {column: scores}` and `decide(table)`."""

    def __init__(self, config):
        super().__init__(config)
        self.cutoff: float | None = None
        self.kind = "global" if getattr(config, "keep_top", None) is not None else "shard"

    def resources(self) -> dict:
        gpus = self.config.scorer.num_gpus
        return {"num_cpus": 1, "num_gpus": gpus} if gpus else {"num_cpus": 1}

    # -- scoring
    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        scorer = load_scorer(self.config.scorer)
        out: dict[str, list] = {}
        step = self.config.scorer.batch_size
        for i in range(0, len(texts), step):
            for column, values in self.score_columns(scorer, texts[i:i + step]).items():
                out.setdefault(column, []).append(values)
        return {c: np.concatenate(v).astype(np.float32) for c, v in out.items()}

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decide(self, table: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        """(keep mask, reasons, details of the dropped rows) for a table carrying its score columns."""
        raise NotImplementedError

    def shard_keep(self, scores: pa.Table) -> np.ndarray | None:
        """A keep mask fixed for a whole shard from its scores (e.g. per-block selection); None: `decide` per batch."""
        return None

    def decide_fixed(self, table: pa.Table, keep: np.ndarray) -> tuple[list[str], list[str]]:
        """(reasons, details) of the rows a `shard_keep` mask drops."""
        raise NotImplementedError

    def apply(self, table: pa.Table, scores: dict[str, np.ndarray] | None = None,
              keep: np.ndarray | None = None) -> StageResult:
        """Score (unless given scores) and filter one table of documents (by `keep` when given)."""
        scores = scores if scores is not None else self.score(table.column("text").to_pylist())
        for column, values in scores.items():
            table = table.append_column(column, pa.array(values, pa.float32()))
        if self.config.mode == "annotate":
            return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])
        if keep is None:
            keep, reasons, details = self.decide(table)
        else:
            reasons, details = self.decide_fixed(table, keep)
        return StageResult.of(self.name, table.num_rows, table.filter(pa.array(keep)),
                              table.filter(pa.array(~keep)), reasons, details)

    # -- execution
    def process_shard(self, source, batch_size: int, decisions: pa.Table | None = None,
                      **context) -> Iterator[StageResult]:
        offset = 0
        shard_keep = self.shard_keep(decisions) if decisions is not None else None
        for batch in iter_parquet_batches(source, batch_size):
            table = pa.Table.from_batches([batch])
            scores = keep = None
            if decisions is not None:  # scored in the global pass: take this batch's rows
                part = decisions.slice(offset, table.num_rows)
                scores = {c: part.column(c).to_numpy() for c in part.schema.names}
                if shard_keep is not None:
                    keep = shard_keep[offset: offset + table.num_rows]
            offset += table.num_rows
            yield self.apply(table, scores, keep)

    def plan(self, shards, options) -> tuple[dict[str, list], dict]:
        from winnow.stages.runtime import map_shards, task_resources

        parts, histograms = map_shards(self.name, shards, _score_task, 1, options, self, options.batch_size,
                                       resources=task_resources(self))
        total = np.zeros(HISTOGRAM_BINS)
        for bins, weights in histograms:
            np.add.at(total, bins, weights)
        self.cutoff, kept_share = cutoff_for_share(total, self.config.keep_top, self.config.score_range)
        figures = {"cutoff": self.cutoff, "kept_share_expected": kept_share}
        return {s.name: parts[i] for i, s in enumerate(shards)}, figures


def _score_task(shard_index, shard, stage: ScoreStage, batch_size: int):
    """Scores of one shard (a table of score columns, in row order) and its score histogram."""
    lo, hi = stage.config.score_range
    histogram = np.zeros(HISTOGRAM_BINS, dtype=np.float64)
    tables = []
    for batch in iter_parquet_batches(shard.source, batch_size, columns=["text"]):
        texts = batch.column("text").to_pylist()
        scores = stage.score(texts)
        tables.append(pa.table({c: pa.array(v, pa.float32()) for c, v in scores.items()}))
        weights = (np.fromiter(map(len, texts), np.float64, len(texts))
                   if stage.config.share_by == "characters" else np.ones(len(texts)))
        bins = np.clip(((scores[stage.primary] - lo) / (hi - lo) * HISTOGRAM_BINS).astype(np.int64),
                       0, HISTOGRAM_BINS - 1)
        histogram += np.bincount(bins, weights=weights, minlength=HISTOGRAM_BINS)
    table = pa.concat_tables(tables) if tables else None
    nonzero = np.flatnonzero(histogram)  # sparse: the driver receives one small histogram per shard
    return [table, (nonzero.astype(np.int32), histogram[nonzero])]


def cutoff_for_share(histogram: np.ndarray, share: float, score_range: tuple[float, float]) -> tuple[float, float]:
    """Lowest score to keep so that the kept weight is at least `share` of the total."""
    total = histogram.sum()
    if total == 0:
        return score_range[0], 0.0
    from_top = np.cumsum(histogram[::-1])
    k = int(np.searchsorted(from_top, share * total - 1e-9))  # bins taken from the top
    k = min(k, len(histogram) - 1)
    lo, hi = score_range
    cutoff = lo + (hi - lo) * (len(histogram) - 1 - k) / len(histogram)
    return float(cutoff), float(from_top[k] / total)

