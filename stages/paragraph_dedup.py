"""Paragraph (or line) deduplication across the corpus: the first occurrence of a unit stays, later ones
are cut out of their documents (the cookie banner, navigation block or disclaimer repeated on
thousands of otherwise different pages).

Map (inside the segment before, as the text streams by): each text is split into units (paragraphs at
blank lines, or lines), each unit normalised as `exact_dedup` does and, when at least `min_chars`
long, hashed (128-bit BLAKE2b) with its position (shard, row, unit). Shuffle by hash, exactly (no
Bloom filter). Reduce: per hash, the first occurrence in input order stays, every later one is
removed; with a run index, a hash an earlier run kept counts as a first occurrence, so all of this
run's copies go, and the partition's new hashes are written as this run's index part. Apply: a
document loses its removed units (and the separator after each); it is rejected as
`mostly_duplicate` when more than `max_removed_fraction` of its characters went (DCLM's BFF rule),
as `too_short_after_dedup` when fewer than `min_words` words remain; a kept one records
`dup_units_removed`, `dup_chars_removed` and what was cut where (`dup_removed`: offset in the new
text and the text removed), which the report shows struck out.

Memory: an eligible unit crosses the shuffle as 36 bytes (two 64-bit hash halves, shard, row, unit
index); a reducer holds its partition's units, so 100M documents of 5 eligible paragraphs are 18 GB
spread over the reducers (0.6 GB each at 32), which is why the exact form is kept and no Bloom
filter is offered.
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
from winnow.stages.base import (
    GlobalStage,
    Mapper,
    Plan,
    PlanContext,
    ShardContext,
    StageResult,
    concat,
    split_by,
    sum_figures,
)

SEPARATORS = {"paragraph": r"\n[ \t\r]*\n", "line": r"\r?\n"}  # a unit ends at a blank line, or a line end
REMOVALS = pa.schema([("_shard", pa.int32()), ("_row", pa.int64()), ("unit", pa.int32())])
REMOVED = pa.list_(pa.struct([("at", pa.int64()), ("text", pa.string())]))


class ParagraphDedupConfig(StageConfig):
    name: Literal["paragraph_dedup"] = "paragraph_dedup"
    unit: Literal["paragraph", "line"] = Field("paragraph", description="paragraph: text between blank lines; "
                                                                        "line: each line")
    normalize: Literal["none", "whitespace", "lower_whitespace"] = Field(
        "whitespace", description="what is ignored when comparing units (as exact_dedup's `normalize`)")
    min_chars: int = Field(100, ge=1, description="units shorter than this (normalised) are never removed: short "
                                                  "lines such as 'Read more' are left to the heuristics")
    max_removed_fraction: Fraction = Field(
        0.8, description="reject the document (mostly_duplicate) when more than this share of its characters "
                         "was removed")
    min_words: int = Field(20, ge=0, description="reject a document that lost units (too_short_after_dedup) when "
                                                 "fewer words than this remain")
    alarm_fraction: Fraction = Field(
        0.5, description="flag a source (run table, report) when this stage rejects more than this share of it")


def split_units(texts: pa.Array | pa.ChunkedArray, unit: str) -> pa.ListArray:
    """Each text's units (the separators dropped), as Arrow splits them (the same units `re.split` gives)."""
    units = pc.split_pattern_regex(texts, SEPARATORS[unit])
    return units.combine_chunks() if isinstance(units, pa.ChunkedArray) else units


def normalise_units(units: pa.Array, mode: str) -> pa.Array:
    """Units as they are compared (see `winnow.stages.exact_dedup.comparable_text`), with Arrow kernels."""
    if mode == "none":
        return units
    units = pc.utf8_trim_whitespace(pc.replace_substring_regex(units, r"\s+", " "))
    return pc.utf8_lower(units) if mode == "lower_whitespace" else units


def unit_hashes(units: list[str]) -> tuple[np.ndarray, np.ndarray]:
    digests = b"".join(hashlib.blake2b(u.encode(), digest_size=16).digest() for u in units)
    pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


class UnitMapper(Mapper):
    """(key, h2, shard, row, unit) of every eligible unit of one shard, split by key; counts last."""

    def __init__(self, stage: ParagraphDedup, shard_index: int, partitions: int):
        self.stage, self.shard_index, self.partitions = stage, shard_index, partitions
        self.tables: list[pa.Table] = []
        self.rows = self.units = 0

    def add(self, table: pa.Table) -> None:
        cfg = self.stage.config
        units = split_units(table.column("text"), cfg.unit)
        flat = normalise_units(units.flatten(), cfg.normalize)
        parents = pc.list_parent_indices(units).to_numpy()
        offsets = units.offsets.to_numpy()
        position = np.arange(len(flat)) - np.repeat(offsets[:-1] - offsets[0], np.diff(offsets))
        eligible = (pc.utf8_length(flat).to_numpy(zero_copy_only=False) >= cfg.min_chars)
        h1, h2 = unit_hashes(flat.filter(pa.array(eligible)).to_pylist())
        self.tables.append(pa.table({
            "key": h1, "h2": h2, "_shard": np.full(len(h1), self.shard_index, np.int32),
            "_row": (parents[eligible] + self.rows).astype(np.int64), "unit": position[eligible].astype(np.int32)}))
        self.rows += table.num_rows
        self.units += len(flat)

    def finish(self) -> list:
        keys = concat(self.tables) or pa.table({"key": pa.array([], pa.uint64()), "h2": pa.array([], pa.uint64()),
                                                "_shard": pa.array([], pa.int32()), "_row": pa.array([], pa.int64()),
                                                "unit": pa.array([], pa.int32())})
        return split_by(keys, "key", self.partitions) + [{"units_seen": self.units, "units_eligible": keys.num_rows}]


def _reduce_task(p: int, stage: ParagraphDedup, n_shards: int, partitions: int, *parts):
    """The removals of one hash partition (every occurrence after the first, or all of them when an earlier
    run kept the unit), routed to their shards; with a run index, the partition's new hashes written."""
    keys = concat(parts)
    df = pl.from_arrow(keys) if keys is not None else pl.from_arrow(REMOVALS.empty_table()).with_columns(
        key=pl.lit(0, pl.UInt64), h2=pl.lit(0, pl.UInt64)).clear()
    figures = {"units_distinct": 0, "units_removed": 0}
    index = stage.run.index
    earlier = None
    if index is not None:
        found, figures["index_bytes_read"] = index.matching_keys(stage.namespace, p, partitions,
                                                                 df["key"].to_numpy(), ["key", "h2"])
        if found is not None:
            earlier = pl.from_arrow(found).unique().with_columns(earlier=pl.lit(True))
            figures["units_removed_as_earlier"] = 0
    df = df.sort(["key", "h2", "_shard", "_row", "unit"]).with_columns(
        rank=pl.int_range(pl.len()).over(["key", "h2"]))
    if earlier is not None:
        df = df.join(earlier, on=["key", "h2"], how="left").with_columns(pl.col("earlier").fill_null(False))
    else:
        df = df.with_columns(earlier=pl.lit(False))
    removed = df.filter((pl.col("rank") > 0) | pl.col("earlier"))
    figures["units_distinct"] = int(df.filter(pl.col("rank") == 0).height)
    figures["units_removed"] = removed.height
    if earlier is not None:
        figures["units_removed_as_earlier"] = int(removed["earlier"].sum())
    if index is not None:
        new = df.filter((pl.col("rank") == 0) & ~pl.col("earlier")).select("key", "h2").to_arrow()
        figures["index"] = index.write_keys(stage.namespace, p, partitions, new, sort=["key", "h2"])
    decisions = removed.select("_shard", "_row", "unit").to_arrow().cast(REMOVALS)
    return split_by(decisions, "_shard", n_shards) + [figures]


class ParagraphDedup(GlobalStage):
    Config = ParagraphDedupConfig
    map_columns = ["text"]

    @property
    def namespace(self) -> str:
        """Where its hashes live in a run index (units split or normalised otherwise never match)."""
        return f"paragraph_dedup/{self.config.unit}-{self.config.normalize}-{self.config.min_chars}"

    def __init__(self, config: ParagraphDedupConfig, run=None):
        super().__init__(config, run)
        self._separator = re.compile(f"({SEPARATORS[config.unit]})")
        if self.run.index is not None:
            self.run.index.check_keyspace(self.name, self.namespace, config.model_dump(
                include={"unit", "normalize", "min_chars"}))

    def mapper(self, shard: ShardContext) -> UnitMapper:
        return UnitMapper(self, shard.index, shard.partitions)

    def plan(self, ctx: PlanContext) -> Plan:
        parts, counts = ctx.map()
        n = len(ctx.shards)
        reduced, figures = ctx.exchange("reduce", _reduce_task, parts, n, ctx.put(self), n, ctx.partitions)
        written = [f.pop("index", []) for f in figures]
        total = sum_figures(counts + figures)
        if self.run.index is not None:
            total["index"] = {"namespace": self.namespace, "keys": [k for w in written for k in w], "docs": [],
                              "keyspace": self.config.model_dump(include={"unit", "normalize", "min_chars"})}
        return Plan({s.name: [r[i] for r in reduced] for i, s in enumerate(ctx.shards)}, total)

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions: pa.Table | None) -> StageResult:
        n = table.num_rows
        cut: dict[int, set[int]] = {}
        if decisions is not None and decisions.num_rows:
            rows = decisions.column("_row").to_numpy() - row_offset
            mine = (rows >= 0) & (rows < n)
            for row, unit in zip(rows[mine].tolist(), decisions.column("unit").to_numpy()[mine].tolist(), strict=True):
                cut.setdefault(row, set()).add(unit)
        texts = table.column("text").to_pylist()
        units_removed = np.zeros(n, np.int64)
        chars_removed = np.zeros(n, np.int64)
        removed: list = [None] * n
        reasons: dict[int, tuple[str, str]] = {}
        cfg = self.config
        for row, units in cut.items():
            text = texts[row]
            new_text, spans = self.cut(text, units)
            chars = sum(len(s) for _, s in spans)
            if chars > cfg.max_removed_fraction * len(text):
                reasons[row] = ("mostly_duplicate", f"{len(units)} units, {chars} of {len(text)} characters "
                                                    f"seen earlier in the corpus")
            elif len(new_text.split()) < cfg.min_words:
                reasons[row] = ("too_short_after_dedup", f"{len(new_text.split())} words left after removing "
                                                         f"{len(units)} repeated units (min_words {cfg.min_words})")
            texts[row], units_removed[row], chars_removed[row] = new_text, len(units), chars
            removed[row] = [{"at": at, "text": s} for at, s in spans]
        drop = np.zeros(n, dtype=bool)
        drop[list(reasons)] = True
        out = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
        out = out.append_column("dup_units_removed", pa.array(units_removed)) \
                 .append_column("dup_chars_removed", pa.array(chars_removed)) \
                 .append_column("dup_removed", pa.array(removed, REMOVED))
        dropped_rows = np.flatnonzero(drop)
        return StageResult.of(
            self.name, n, out.filter(pa.array(~drop)), table.take(pa.array(dropped_rows)),
            [reasons[r][0] for r in dropped_rows], [reasons[r][1] for r in dropped_rows],
            counters={"documents_changed": int((units_removed > 0).sum() - drop.sum()),
                      "units_removed": int(units_removed.sum())})

    def cut(self, text: str, units: set[int]) -> tuple[str, list[tuple[int, str]]]:
        """`text` without the given units (each with the separator after it, or before it when it is the
        last), and what was cut: (offset in the new text, the text removed)."""
        pieces = self._separator.split(text)  # unit, separator, unit, ..., unit
        kept: list[str] = []
        spans: list[tuple[int, str]] = []
        length = 0
        last = len(pieces) // 2
        for i in range(last + 1):
            unit = pieces[2 * i]
            separator = pieces[2 * i + 1] if i < last else ""
            if i in units:
                if i == last and kept:  # the last unit takes the separator before it
                    length -= len(kept[-1])
                    spans.append((length, kept.pop() + unit))
                else:
                    spans.append((length, unit + separator))
                continue
            kept += [unit, separator] if separator else [unit]
            length += len(unit) + len(separator)
        return "".join(kept), spans
