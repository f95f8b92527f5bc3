"""What model-scored stages (quality, toxicity, preselect, color_filter) share: scoring batches inside
Ray workers with a model loaded once per worker, and keeping an exact top share of the whole corpus.

For a top share, each shard's scoring task returns its scores (in row order) and its selection keys
(score, id, weight: see `winnow.stages.selection`); both stay in Ray's object store. The driver finds
the boundary key without gathering the scores, and each shard's rows are kept by comparing with it
when the shard is written, so the model runs once per document.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from winnow.scorers.config import load_scorer
from winnow.stages.base import GlobalStage, Mapper, StageResult
from winnow.stages.selection import Cutoff, exact_share, find_cutoff, key_table, ray_runner, target_weight


class ScoreStage(GlobalStage):
    """Subclasses set `score_columns(scorer, texts) -> {column: scores}` and `decide(table)`."""

    def __init__(self, config, run=None):
        super().__init__(config, run)
        self.cutoff: Cutoff | None = None
        self.kind = "global" if getattr(config, "keep_top", None) is not None else "shard"

    def gpus(self) -> float:
        return self.config.scorer.num_gpus

    def configured_actors(self) -> int | None:
        return self.config.scorer.actors

    def setup(self):
        return load_scorer(self.config.scorer)

    # -- scoring
    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Score columns of `texts`, computed where the stage's models are (here or a model actor)."""
        return self.submit_to_models("score_here", texts)()

    def score_here(self, texts: list[str]) -> dict[str, np.ndarray]:
        scorer = self.models
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

    def share(self):
        """The top share to keep, as an exact fraction."""
        return exact_share(self.config.keep_top)

    def top_share_keep(self, table: pa.Table) -> tuple[np.ndarray, list[str], list[str]]:
        """(keep mask, reasons, details) of a table by the corpus-wide cut-off."""
        scores = table.column(self.primary).to_numpy()
        keep = self.cutoff.keep(scores, table.column("id").to_pylist())
        rule = f"top {self.share()} by {self.config.share_by}"
        details = [f"{self.primary} {s:.4f} ranks below the cut-off ({self.cutoff.describe()}) of the {rule}"
                   for s in scores[~keep]]
        return keep, ["below_top_share"] * len(details), details

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
    def process_tables(self, tables, decisions: pa.Table | None = None, **context) -> Iterator[StageResult]:
        if decisions is None and self.pool:
            yield from self._score_ahead(tables)
            return
        offset = 0
        shard_keep = self.shard_keep(decisions) if decisions is not None else None
        for table in tables:
            scores = keep = None
            if decisions is not None:  # scored in the global pass: take this batch's rows
                part = decisions.slice(offset, table.num_rows)
                scores = {c: part.column(c).to_numpy() for c in part.schema.names}
                if shard_keep is not None:
                    keep = shard_keep[offset: offset + table.num_rows]
            offset += table.num_rows
            yield self.apply(table, scores, keep)

    def _score_ahead(self, tables, ahead: int = 2) -> Iterator[StageResult]:
        """Tables scored by the model actors, the next `ahead` submitted before the oldest is waited for,
        so the stages before this one and the actors work at the same time; results in table order."""
        waiting: deque = deque()
        for table in tables:
            waiting.append((table, self.submit_to_models("score_here", table.column("text").to_pylist())))
            if len(waiting) > ahead:
                table, scores = waiting.popleft()
                yield self.apply(table, scores())
        while waiting:
            table, scores = waiting.popleft()
            yield self.apply(table, scores())

    def mapper(self, shard_index: int, partitions: int) -> "ScoreMapper":
        return ScoreMapper(self)

    def map_outputs(self, partitions: int) -> int:
        return 2

    def plan(self, shards, options, mapped=None) -> tuple[dict[str, list], dict]:
        from winnow.stages.runtime import map_phase

        parts, totals = map_phase(self, shards, options, 0, mapped)
        total = sum(totals)
        target = target_weight(total, self.share(), self.config.share_by)
        self.cutoff, figures = find_cutoff(ray_runner(self.name, [keys for _, keys in parts]), target)
        figures = {"cutoff": self.cutoff.score, "cutoff_id": self.cutoff.doc_id, "share": str(self.share()),
                   "share_by": self.config.share_by, "total_weight": total, "target_weight": target, **figures}
        return {s.name: [parts[i][0]] for i, s in enumerate(shards)}, figures


class ScoreMapper(Mapper):
    """Scores of one shard (a table of score columns, in row order), its selection keys, and its total
    weight (documents or characters)."""

    def __init__(self, stage: ScoreStage):
        self.stage, self.tables, self.ids, self.weights = stage, [], [], []

    def add(self, table: pa.Table) -> None:
        texts = table.column("text").to_pylist()
        scores = self.stage.score(texts)
        self.tables.append(pa.table({c: pa.array(v, pa.float32()) for c, v in scores.items()}))
        self.ids.append(table.column("id"))
        self.weights.append(np.fromiter(map(len, texts), np.int64, len(texts))
                            if self.stage.config.share_by == "characters" else np.ones(len(texts), np.int64))

    def finish(self) -> list:
        table = pa.concat_tables(self.tables) if self.tables else None
        scores = table.column(self.stage.primary) if table is not None else []
        weights = np.concatenate(self.weights) if self.weights else np.zeros(0, np.int64)
        ids = pa.chunked_array([c for i in self.ids for c in i.chunks], pa.string())
        keys = key_table(scores, ids, weights)  # sorted once, for the whole shard
        return [table, keys, int(weights.sum())]
