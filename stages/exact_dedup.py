"""Exact deduplication: one survivor per group of identical (normalised) texts.

Map: a 128-bit BLAKE2b hash of each normalised text, with the row's id (and score when the
survivor is chosen by a score column). Reduce: per hash partition, order each group by score
(descending) then id (ascending), or by input order, and keep the first. Rejects name the survivor's id.

With a run index, each reducer also reads the index's hashes that fall in its partition: a group
that an earlier run already kept is dropped whole (the earlier document always survives; the
detail names it and its run), and the reducer writes the hashes of what it kept as this run's new
index part.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from winnow.schemas.config import Fraction, StageConfig
from winnow.stages.base import DECISION_SCHEMA, GlobalStage, Plan, PlanContext, StageResult, split_by, sum_figures
from winnow.storage.index import make_ref

_WS = re.compile(r"\s+")


class ExactDedupConfig(StageConfig):
    name: Literal["exact_dedup"] = "exact_dedup"
    normalize: Literal["none", "whitespace", "lower_whitespace"] = Field(
        "whitespace", description="what is ignored when comparing texts"
    )
    alarm_fraction: Fraction = Field(
        0.5, description="flag a source (in the run table and the report) when this stage removes more than this "
                         "share of its documents, with the largest clusters")
    keep: str = Field(
        "lowest_id",
        description="survivor of a group: 'lowest_id', 'first' (earliest in input order: shard, then row), "
                    "or the name of a numeric column whose highest value wins",
    )


def comparable_text(text: str, mode: str) -> str:
    """What exact_dedup compares of a text: it as is, or with whitespace runs collapsed (and lower-cased)."""
    if mode == "none":
        return text
    text = _WS.sub(" ", text).strip()
    return text.lower() if mode == "lower_whitespace" else text


def text_hashes(texts: list[str], mode: str) -> tuple[np.ndarray, np.ndarray]:
    digests = b"".join(hashlib.blake2b(comparable_text(t, mode).encode(), digest_size=16).digest() for t in texts)
    pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


class ExactDedup(GlobalStage):
    Config = ExactDedupConfig

    def __init__(self, config: ExactDedupConfig, run=None):
        super().__init__(config, run)
        self.score_column = None if config.keep in ("lowest_id", "first") else config.keep
        self.map_columns = ["id", "text"] + ([self.score_column] if self.score_column else [])
        if self.run.index is not None:
            self.run.index.check_keyspace(self.name, self.namespace, {"normalize": config.normalize})

    @property
    def namespace(self) -> str:
        """Where its hashes live in a run index: hashes made with another normalisation never match."""
        return f"exact_dedup/{self.config.normalize}"

    def plan(self, ctx: PlanContext) -> Plan:
        if self.run.index is None:
            return super().plan(ctx)
        parts, rows = ctx.map()
        offsets = np.concatenate([[0], np.cumsum([r or 0 for r in rows])[:-1]]).astype(np.int64)
        n = len(ctx.shards)
        reduced, figures = ctx.exchange("reduce", _reduce_against_index, parts, n, ctx.put(self), n, ctx.partitions,
                                        offsets)
        written = [f.pop("index") for f in figures]
        total = sum_figures(figures)
        total["index"] = {"namespace": self.namespace, "keyspace": {"normalize": self.config.normalize},
                          "keys": [k for w in written for k in w["keys"]], "docs": [w["docs"] for w in written]}
        return Plan({s.name: [r[i] for r in reduced] for i, s in enumerate(ctx.shards)}, total)

    def map_keys(self, table: pa.Table) -> pa.Table:
        if self.score_column and self.score_column not in table.schema.names:
            raise ValueError(
                f"exact_dedup.keep names column {self.score_column!r}, which the input does not have "
                f"(columns: {table.schema.names}); use 'lowest_id', 'first' or a numeric score column"
            )
        h1, h2 = text_hashes(table.column("text").to_pylist(), self.config.normalize)
        columns = {"key": h1, "h2": h2, "id": table.column("id")}
        if self.score_column:
            columns["score"] = pc.cast(table.column(self.score_column), pa.float64())
        return pa.table(columns)

    def reduce(self, keys: pa.Table) -> tuple[pa.Table, dict]:
        decisions, _, figures = self.decide(pl.from_arrow(keys))
        return decisions, figures

    def decide(self, df: pl.DataFrame, earlier: pl.DataFrame | None = None,
               earlier_docs: dict[int, tuple[str, str]] | None = None) -> tuple[pa.Table, pl.DataFrame, dict]:
        """Decisions for one partition's rows, the rows kept, and figures. `earlier`: the index's (key,
        h2, ref) rows of these hashes: their groups are dropped whole, in favour of the earlier document."""
        if df.height == 0:
            return DECISION_SCHEMA.empty_table(), df, {"duplicate_groups": 0}
        order = (["score", "id"], [True, False]) if "score" in df.columns else \
            (["_shard", "_row"], [False, False]) if self.config.keep == "first" else (["id"], [False])
        if earlier is not None and earlier.height:
            df = df.join(earlier.group_by(["key", "h2"]).agg(pl.col("ref").min()), on=["key", "h2"], how="left")
        else:
            df = df.with_columns(ref=pl.lit(None, pl.Int64))
        df = df.sort(["key", "h2", *order[0]], descending=[False, False, *order[1]], nulls_last=True)
        df = df.with_columns(
            survivor=pl.col("id").first().over(["key", "h2"]),
            group_size=pl.len().over(["key", "h2"]),
            rank=pl.int_range(pl.len()).over(["key", "h2"]),
        )
        drop = (pl.col("rank") > 0) | pl.col("ref").is_not_null()
        dropped = df.filter(drop)
        details = [f"duplicate of {s}" if ref is None else "duplicate of {} from run {}".format(*earlier_docs[ref])
                   for s, ref in zip(dropped["survivor"].to_list(), dropped["ref"].to_list(), strict=True)]
        decisions = pa.table({
            "_shard": dropped["_shard"].to_arrow().cast(pa.int32()),
            "_row": dropped["_row"].to_arrow().cast(pa.int64()),
            "reason": pa.array(["exact_duplicate"] * dropped.height, pa.string()),
            "detail": pa.array(details, pa.string()),
        }, schema=DECISION_SCHEMA)
        groups = df.filter((pl.col("rank") == 0) & ((pl.col("group_size") > 1) | pl.col("ref").is_not_null()))
        figures = {"duplicate_groups": groups.height}
        if earlier is not None:
            figures["earlier_run_duplicates"] = int(dropped["ref"].is_not_null().sum())
        return decisions, df.filter(~drop), figures

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions: pa.Table) -> StageResult:
        mine = decisions.filter(pc.and_(pc.greater_equal(decisions["_row"], row_offset),
                                        pc.less(decisions["_row"], row_offset + table.num_rows)))
        drop_rows = mine.column("_row").to_numpy() - row_offset
        order = np.argsort(drop_rows, kind="stable")
        drop_rows = drop_rows[order]
        keep_mask = np.ones(table.num_rows, dtype=bool)
        keep_mask[drop_rows] = False
        details = mine.column("detail").take(pa.array(order)).to_pylist()
        return StageResult.of(self.name, table.num_rows, table.filter(pa.array(keep_mask)),
                              table.take(pa.array(drop_rows)), ["exact_duplicate"] * len(drop_rows), details)


def _reduce_against_index(p: int, stage: ExactDedup, n_shards: int, partitions: int, offsets: np.ndarray, *parts):
    """One hash partition decided against the index too; its kept hashes and documents written as this run's
    index part. Decisions routed to their shards, then the figures (with the parts written)."""
    index, ns = stage.run.index, stage.namespace
    keys = [t for t in parts if t is not None]
    df = pl.from_arrow(pa.concat_tables(keys)) if keys else None
    if df is None or df.height == 0:
        df = pl.DataFrame(schema={"key": pl.UInt64, "h2": pl.UInt64, "id": pl.String, "_shard": pl.Int32,
                                  "_row": pl.Int64})
    earlier, read = index.matching_keys(ns, p, partitions, df["key"].to_numpy(), ["key", "h2", "ref"])
    earlier = pl.from_arrow(earlier) if earlier is not None else None
    if earlier is not None:
        earlier = earlier.join(df.select("key", "h2").unique(), on=["key", "h2"], how="semi")
    docs = index.lookup(ns, earlier["ref"].to_numpy()) if earlier is not None and earlier.height else {}
    decisions, kept, figures = stage.decide(df, earlier, docs)
    refs = make_ref(index.generation, offsets[kept["_shard"].to_numpy()] + kept["_row"].to_numpy())
    new_keys = pa.table({"key": kept["key"].to_arrow().cast(pa.uint64()), "h2": kept["h2"].to_arrow().cast(pa.uint64()),
                         "ref": pa.array(refs, pa.int64())})
    figures["index"] = {"keys": index.write_keys(ns, p, partitions, new_keys, sort=["key", "h2"]),
                        "docs": index.write_docs(ns, p, refs, kept["id"].to_arrow().cast(pa.string()))}
    figures["index_bytes_read"] = read
    return split_by(decisions, "_shard", n_shards) + [figures]
