"""What model-scored stages (quality, toxicity, preselect, color_filter) share: scoring batches with a
model loaded once per worker (or in model actors), and keeping an exact top share of the whole corpus.

A threshold is a per-shard rule: `ScoreStage`. A top share is a corpus-wide one: `TopShareStage`, a
global stage. Its map scores each shard (the scores, in row order, and its selection keys `(neg, id,
weight)` stay in Ray's object store); its plan finds the boundary key without gathering the scores
(`winnow.runtime.selection`); each shard's rows are then kept by comparing with that cut-off when the
shard is written, so the model runs once per document. A stage whose config may ask for either
(quality, preselect) has a subclass of each; `Stage.variant` picks by the config.

"Keep the top 10%" keeps exactly the smallest set of best-ranked documents whose weight (1 per
document, or its characters) reaches the share: ⌊N x share⌋ documents, or the fewest documents
holding at least ⌈share x characters⌉. Documents rank by score, highest first, and equal scores by
id, lowest first (a NaN score ranks last), so every run makes the same choice and a tie group can be
cut exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from winnow.scorers.config import ModelResources, load_scorer
from winnow.stages.base import GlobalStage, Mapper, Plan, PlanContext, ShardContext, Stage, StageResult, require_model


def exact_share(value: float) -> Fraction:
    """A config's decimal share (0.3, or 1/tau) as the fraction the user wrote: 0.3 means 3/10, not the
    float just below it (⌊10 x 0.3⌋ must be 3)."""
    return Fraction(repr(float(value)))


def target_weight(total: int, share: Fraction, share_by: str) -> int:
    """Weight the kept set must reach: ⌊N x share⌋ documents, or ⌈share x characters⌉."""
    return math.floor(total * share) if share_by == "documents" else math.ceil(total * share)


def rank_scores(scores) -> np.ndarray:
    """Scores as float64 with NaN ranked last (as -inf)."""
    values = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def key_table(scores, ids: pa.Array | pa.ChunkedArray, weights: np.ndarray) -> pa.Table:
    """One shard's selection keys sorted in rank order: the only data selection reads."""
    table = pa.table({"neg": pa.array(-rank_scores(scores)), "id": ids, "weight": pa.array(weights, pa.int64())})
    return table.sort_by([("neg", "ascending"), ("id", "ascending")])


@dataclass(frozen=True)
class Cutoff:
    """Keep a document when it ranks at or before (score, doc_id); `score` None keeps nothing."""

    score: float | None
    doc_id: str | None

    @classmethod
    def at(cls, boundary: tuple[float, str] | None) -> Cutoff:
        """The cut-off at a selection's boundary key `(negated score, id)` (None: keep nothing)."""
        return cls(None, None) if boundary is None else cls(-boundary[0], boundary[1])

    def keep(self, scores, ids: list[str]) -> np.ndarray:
        values = rank_scores(scores)
        if self.score is None:
            return np.zeros(len(values), dtype=bool)
        keep = values > self.score
        for i in np.flatnonzero(values == self.score):
            keep[i] = ids[i] <= self.doc_id
        return keep

    def describe(self) -> str:
        return "nothing" if self.score is None else f"score {self.score:.6g}, id {self.doc_id!r}"


Verdict = tuple[np.ndarray, list[str], list[str]]  # (keep mask, reasons and details of the dropped rows)


class ScoreStage(Stage):
    """A per-shard scored stage: subclasses set `primary` (the score column), `score_columns(scorer,
    texts) -> {column: scores}` and `decide(table) -> Verdict`."""

    primary: str = ""

    def __init__(self, config, run=None):
        super().__init__(config, run)
        self.check_files()

    def check_files(self) -> None:
        """The model files exist and look like the kind of model configured (StageFileError if not)."""
        require_model(self.name, self.config.scorer.model, self.config.scorer.kind)

    @classmethod
    def variant(cls, config) -> type[Stage]:
        """This class for a threshold; its `TopShareStage` subclass when the config keeps a top share."""
        if issubclass(cls, TopShareStage) or getattr(config, "keep_top", None) is None:
            return cls
        top_share = [sub for sub in cls.__subclasses__() if issubclass(sub, TopShareStage)]
        if not top_share:
            raise TypeError(f"{cls.__name__} keeps a top share only through a subclass `(TopShareStage, "
                            f"{cls.__name__})`; define one")
        return top_share[0]

    def resources(self) -> ModelResources:
        """Where the stage's models run (GPUs, actors, batch size, device)."""
        return self.config.scorer

    def gpus(self) -> float:
        return self.resources().num_gpus

    def configured_actors(self) -> int | None:
        return self.resources().actors

    def setup(self):
        return load_scorer(self.config.scorer)

    # -- scoring
    def score(self, texts: list[str], models=None) -> dict[str, np.ndarray]:
        """Score columns of `texts`, computed where the stage's models are (here, or its model actors)."""
        return self.call_models(models, "score_here", texts)()

    def score_here(self, texts: list[str]) -> dict[str, np.ndarray]:
        scorer = self.loaded
        out: dict[str, list] = {}
        step = self.resources().batch_size
        for i in range(0, len(texts), step):
            for column, values in self.score_columns(scorer, texts[i:i + step]).items():
                out.setdefault(column, []).append(values)
        return {c: np.concatenate(v).astype(np.float32) for c, v in out.items()}

    def score_columns(self, scorer, texts: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def decide(self, table: pa.Table) -> Verdict:
        """The verdict on a table carrying its score columns."""
        raise NotImplementedError

    def apply(self, table: pa.Table, scores: dict[str, np.ndarray] | None = None,
              verdict: Verdict | None = None) -> StageResult:
        """Score (unless given scores) and filter one table of documents (by `verdict` when given)."""
        scores = scores if scores is not None else self.score(table.column("text").to_pylist())
        for column, values in scores.items():
            table = table.append_column(column, pa.array(values, pa.float32()))
        if self.config.mode == "annotate":
            return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])
        keep, reasons, details = verdict if verdict is not None else self.decide(table)
        return StageResult.of(self.name, table.num_rows, table.filter(pa.array(keep)),
                              table.filter(pa.array(~keep)), reasons, details)

    def process_tables(self, tables, shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        """Tables scored where the models are: with model actors, the next two submitted before the
        oldest is waited for, so the stages before this one and the actors work at the same time."""
        waiting: deque = deque()
        for table in tables:
            waiting.append((table, self.call_models(shard.models, "score_here", table.column("text").to_pylist())))
            if len(waiting) > (2 if shard.models is not None else 0):
                table, scores = waiting.popleft()
                yield self.apply(table, scores())
        while waiting:
            table, scores = waiting.popleft()
            yield self.apply(table, scores())


class TopShareStage(ScoreStage, GlobalStage):
    """A scored stage that keeps exactly a top share of the whole corpus (a global stage)."""

    kind = "global"

    def share(self) -> Fraction:
        """The top share to keep, as an exact fraction."""
        return exact_share(self.config.keep_top)

    def share_by(self) -> str:
        """What the share counts: "documents" or "characters"."""
        return self.config.share_by

    def mapper(self, shard: ShardContext) -> ScoreMapper:
        return ScoreMapper(self, shard.models)

    def map_outputs(self, partitions: int) -> int:
        return 2

    def plan(self, ctx: PlanContext) -> Plan:
        parts, totals = ctx.map()
        total = sum(totals)
        target = target_weight(total, self.share(), self.share_by())
        boundary, figures = ctx.select([keys for _, keys in parts], target)
        cutoff = Cutoff.at(boundary)
        figures = {"cutoff": cutoff.score, "cutoff_id": cutoff.doc_id, "share": str(self.share()),
                   "share_by": self.share_by(), "total_weight": total, "target_weight": target, **figures}
        return Plan({s.name: [parts[i][0]] for i, s in enumerate(ctx.shards)}, figures, rule=cutoff)

    def shard_keep(self, scores: pa.Table) -> np.ndarray | None:
        """A keep mask fixed for a whole shard from its scores (e.g. per-block selection); None: by the cut-off."""
        return None

    def verdict(self, table: pa.Table, scores: dict[str, np.ndarray], keep: np.ndarray | None,
                cutoff: Cutoff) -> Verdict:
        """The verdict on a table: by `keep` (a `shard_keep` slice) when given, else by the corpus-wide cut-off."""
        values = scores[self.primary]
        if keep is None:
            keep = cutoff.keep(values, table.column("id").to_pylist())
        rule = f"top {self.share()} by {self.share_by()}"
        details = [f"{self.primary} {s:.4f} ranks below the cut-off ({cutoff.describe()}) of the {rule}"
                   for s in values[~keep]]
        return keep, ["below_top_share"] * len(details), details

    def process_tables(self, tables, shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        """Each table with the scores its shard's map computed (`shard.decisions`), kept by the plan's cut-off."""
        whole = self.shard_keep(shard.decisions)
        offset = 0
        for table in tables:
            part = shard.decisions.slice(offset, table.num_rows)
            scores = {c: part.column(c).to_numpy() for c in part.schema.names}
            keep = whole[offset: offset + table.num_rows] if whole is not None else None
            offset += table.num_rows
            yield self.apply(table, scores, self.verdict(table, scores, keep, shard.rule))


class ScoreMapper(Mapper):
    """Scores of one shard (a table of score columns, in row order), its selection keys, and its total
    weight (documents or characters)."""

    def __init__(self, stage: TopShareStage, models=None):
        self.stage, self.models, self.tables, self.ids, self.weights = stage, models, [], [], []

    def add(self, table: pa.Table) -> None:
        texts = table.column("text").to_pylist()
        scores = self.stage.score(texts, self.models)
        self.tables.append(pa.table({c: pa.array(v, pa.float32()) for c, v in scores.items()}))
        self.ids.append(table.column("id"))
        self.weights.append(np.fromiter(map(len, texts), np.int64, len(texts))
                            if self.stage.share_by() == "characters" else np.ones(len(texts), np.int64))

    def finish(self) -> list:
        table = pa.concat_tables(self.tables) if self.tables else None
        scores = table.column(self.stage.primary) if table is not None else []
        weights = np.concatenate(self.weights) if self.weights else np.zeros(0, np.int64)
        ids = pa.chunked_array([c for i in self.ids for c in i.chunks], pa.string())
        keys = key_table(scores, ids, weights)  # sorted once, for the whole shard
        return [table, keys, int(weights.sum())]
