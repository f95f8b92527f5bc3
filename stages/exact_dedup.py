"""Exact deduplication: one survivor per group of identical (normalised) texts.

Map: a 128-bit BLAKE2b hash of each normalised text, with the row's id (and score when the
survivor is chosen by a score column). Reduce: per hash partition, order each group by score
(descending) then id (ascending), or by input order, and keep the first. Rejects name the survivor's id.
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

from winnow.schemas.config import StageConfig
from winnow.stages.base import DECISION_SCHEMA, GlobalStage, StageResult

_WS = re.compile(r"\s+")


class ExactDedupConfig(StageConfig):
    name: Literal["exact_dedup"] = "exact_dedup"
    normalize: Literal["none", "whitespace", "lower_whitespace"] = Field(
        "whitespace", description="what is ignored when comparing texts"
    )
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
        df = pl.from_arrow(keys)
        if df.height == 0:
            return DECISION_SCHEMA.empty_table(), {"duplicate_groups": 0}
        order = (["score", "id"], [True, False]) if "score" in df.columns else \
            (["_shard", "_row"], [False, False]) if self.config.keep == "first" else (["id"], [False])
        df = df.sort(["key", "h2", *order[0]], descending=[False, False, *order[1]], nulls_last=True)
        df = df.with_columns(
            survivor=pl.col("id").first().over(["key", "h2"]),
            group_size=pl.len().over(["key", "h2"]),
            rank=pl.int_range(pl.len()).over(["key", "h2"]),
        )
        dropped = df.filter(pl.col("rank") > 0)
        decisions = pa.table({
            "_shard": dropped["_shard"].to_arrow().cast(pa.int32()),
            "_row": dropped["_row"].to_arrow().cast(pa.int64()),
            "reason": pa.array(["exact_duplicate"] * dropped.height, pa.string()),
            "detail": pa.array([f"duplicate of {s}" for s in dropped["survivor"].to_list()], pa.string()),
        }, schema=DECISION_SCHEMA)
        groups = df.filter((pl.col("rank") == 0) & (pl.col("group_size") > 1))
        return decisions, {"duplicate_groups": groups.height}

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
