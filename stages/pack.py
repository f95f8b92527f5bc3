"""Pack: tokenized documents -> training sequences under OUTPUT/tokens/ (global).

Input shards are dealt to `ranks` groups (shard i -> rank i mod ranks) and each rank packs its
group on its own Ray task, so no process holds the corpus and N training ranks read disjoint
files. Per rank:

- `megatron/rank-RRRRR.{bin,idx}`: the documents (seeded order), one Megatron sequence each;
- `concat`/`bfd`: `<strategy>/rank-RRRRR.parquet` with `input_ids` (seq_len, padded with pad_id),
  `position_ids` restarting at every document piece, `loss_mask` (0 on padding), `cu_seqlens`;
- `decompose`: `decompose/len-<2^k>/rank-RRRRR.parquet`, one folder per bucket (2^k + 1 ids a
  sequence by default: see `winnow.stages.lib.packing.decompose`).

`summary.json` totals sequences, tokens, padding fraction, documents split, tokens dropped and
per-bucket counts. The stage's own shards pass the documents through unchanged (counts add up).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from winnow.schemas.config import StageConfig
from winnow.stages.base import GlobalStage, Plan, PlanContext, RunContext, ShardContext, StageResult
from winnow.stages.lib.packing import bfd, concat, decompose
from winnow.storage.fs import Location
from winnow.storage.megatron import MegatronWriter
from winnow.storage.shards import ShardWriter, parquet_schema, upload_file

ROWS_PER_WRITE = 4096


class PackConfig(StageConfig):
    """Training sequences from tokenized documents, written under OUTPUT/tokens/."""

    name: Literal["pack"] = "pack"
    strategy: Literal["concat", "bfd", "decompose"] = "bfd"
    seq_len: int = Field(2048, ge=2)
    min_log2: int = Field(8, ge=0, le=30, description="decompose: shortest bucket 2^min_log2")
    max_log2: int = Field(13, ge=0, le=30, description="decompose: longest bucket 2^max_log2")
    piece: Literal["targets", "tokens"] = Field(
        "targets", description="decompose: a bucket-k piece holds 2^k + 1 ids (2^k next-token targets, as "
                               "apple/ml-dataset-decomposition) or 2^k ids")
    overflow: Literal["random", "longest"] = Field(
        "random", description="decompose: the part of a document beyond 2^max_log2 goes to buckets drawn at "
                              "random (P(k) ~ 2^-k, seeded; the reference's default) or to the longest bucket")
    ranks: int = Field(1, ge=1, description="output parts (one per training rank); each packs its share of shards")
    pad_id: int = Field(0, ge=0)
    seed: int = 0
    megatron: bool = Field(True, description="also write the documents as Megatron .bin/.idx")

    @model_validator(mode="after")
    def _buckets(self) -> PackConfig:
        if self.min_log2 > self.max_log2:
            raise ValueError(f"min_log2 {self.min_log2} > max_log2 {self.max_log2}")
        return self


def _load(shards, batch_size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, flat tokens (in the tokenize stage's type) and offsets of every document in these shards."""
    ids, chunks, lengths = [], [], []
    dtype = np.dtype(np.uint16)
    for shard in shards:
        schema = parquet_schema(shard.source)
        if "input_ids" in schema.names:  # (an empty shard may have no token column)
            dtype = np.dtype(schema.field("input_ids").type.value_type.to_pandas_dtype())
        for batch in shard.tables(batch_size, ["id", "input_ids"]):
            ids += batch.column("id").to_pylist()
            col = batch.column("input_ids").combine_chunks()
            chunks.append(col.values.to_numpy(zero_copy_only=False))
            lengths.append(np.diff(col.offsets.to_numpy()))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]) if lengths else np.zeros(1, np.int64)
    return ids, tokens, offsets.astype(np.int64)


def _sequence_table(sequences, tokens, offsets, width: int | None, pad_id: int, dtype) -> pa.Table:
    """Rows of input_ids / position_ids / loss_mask / cu_seqlens for sequences of pieces."""
    input_ids, positions, masks, cu = [], [], [], []
    for seq in sequences:
        parts = [tokens[offsets[d] + s: offsets[d] + e] for d, s, e in seq]
        used = sum(len(p) for p in parts)
        size = width or used
        ids = np.full(size, pad_id, dtype=dtype)
        ids[:used] = np.concatenate(parts)
        pos = np.zeros(size, dtype=np.int32)
        pos[:used] = np.concatenate([np.arange(len(p), dtype=np.int32) for p in parts])
        mask = np.zeros(size, dtype=np.uint8)
        mask[:used] = 1
        input_ids.append(ids)
        positions.append(pos)
        masks.append(mask)
        cu.append(np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int32))
    token_type = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.table({
        "input_ids": pa.array(input_ids, pa.list_(token_type)),
        "position_ids": pa.array(positions, pa.list_(pa.int32())),
        "loss_mask": pa.array(masks, pa.list_(pa.uint8())),
        "cu_seqlens": pa.array(cu, pa.list_(pa.int32())),
    })


def _write(loc: Location, sequences, tokens, offsets, width, pad_id, dtype) -> None:
    writer = None
    for i in range(0, max(len(sequences), 1), ROWS_PER_WRITE):
        table = _sequence_table(sequences[i:i + ROWS_PER_WRITE], tokens, offsets, width, pad_id, dtype)
        writer = writer or ShardWriter(loc, table.schema)
        writer.write(table)
    writer.commit()


def _write_megatron(prefix: Location, tokens, offsets, dtype, seed: int) -> None:
    """The documents in a seeded order as `.bin/.idx`; on S3 written locally, then uploaded (.idx last,
    so a reader that finds the index finds its data)."""
    order = list(range(len(offsets) - 1))
    random.Random(seed).shuffle(order)
    with tempfile.TemporaryDirectory() as tmp:
        local = prefix.path if prefix.is_local else os.path.join(tmp, "part")
        writer = MegatronWriter(local, dtype)
        for d in order:
            writer.add(tokens[offsets[d]:offsets[d + 1]])
            writer.end_document()
        writer.finish()
        if not prefix.is_local:
            for suffix in (".bin", ".idx"):
                upload_file(local + suffix, Location(prefix.fs, prefix.path + suffix, prefix.uri + suffix))


def _pack_rank(rank: int, stage: Pack, shards, batch_size: int) -> dict:
    cfg: PackConfig = stage.config
    ids, tokens, offsets = _load(shards, batch_size)
    lengths = np.diff(offsets).tolist()
    dtype = tokens.dtype
    name = f"rank-{rank:05d}"
    if cfg.megatron:
        _write_megatron(stage.tokens_dir.join("megatron", name), tokens, offsets, dtype, cfg.seed + rank)
    summary = {"documents": len(ids), "tokens": int(offsets[-1]), "sequences": 0, "slots": 0,
               "documents_split": 0, "tokens_dropped": 0, "buckets": {}}
    if cfg.strategy == "decompose":
        buckets = decompose(lengths, cfg.min_log2, cfg.max_log2, cfg.piece, cfg.overflow, cfg.seed + rank)
        for k, sequences in sorted(buckets.items()):
            _write(stage.tokens_dir.join("decompose", f"len-{1 << k:05d}", f"{name}.parquet"), sequences, tokens,
                   offsets, None, cfg.pad_id, dtype)
            summary["buckets"][str(1 << k)] = len(sequences)
            summary["sequences"] += len(sequences)
            summary["slots"] += sum(e - s for seq in sequences for _, s, e in seq)
        all_pieces = [seq for sequences in buckets.values() for seq in sequences]
    else:
        all_pieces = concat(lengths, cfg.seq_len, cfg.seed + rank) if cfg.strategy == "concat" \
            else bfd(lengths, cfg.seq_len)
        _write(stage.tokens_dir.join(cfg.strategy, f"{name}.parquet"), all_pieces, tokens, offsets, cfg.seq_len,
               cfg.pad_id, dtype)
        summary["sequences"] = len(all_pieces)
        summary["slots"] = len(all_pieces) * cfg.seq_len
    pieces_per_doc = np.bincount([d for seq in all_pieces for d, _, _ in seq], minlength=len(ids))
    summary["documents_split"] = int((pieces_per_doc > 1).sum())
    summary["tokens_dropped"] = summary["tokens"] - sum(e - s for seq in all_pieces for _, s, e in seq)
    return summary


class Pack(GlobalStage):
    """Packs the tokenized documents into training sequences under OUT/tokens/; the documents
    themselves pass through unchanged (and are not written again)."""

    Config = PackConfig
    passes_through = True

    @classmethod
    def summary(cls, output: str, extra: dict):
        if not extra:
            return None
        line = (f"training sequences: {output}/tokens/ ({extra.get('strategy', '?')}: {extra.get('sequences', 0):,} "
                f"sequences of {extra.get('seq_len', '?')} tokens, padding {extra.get('padding_fraction', 0):.2%}, "
                f"efficiency {1 - extra.get('padding_fraction', 0.0):.2%}; {extra.get('documents_split', 0):,} "
                f"documents split, {extra.get('tokens_dropped', 0):,} tokens dropped; Megatron files in "
                f"tokens/megatron/)")
        kept = extra.get("tokens", 0) - extra.get("tokens_dropped", 0)
        bars = [("token slots of the packed sequences", [("tokens", kept), ("padding", extra.get("slots", 0) - kept)])]
        if extra.get("buckets"):
            bars.append(("sequences per bucket", [(f"len {k}", v) for k, v in sorted(extra["buckets"].items(),
                                                                                     key=lambda kv: int(kv[0]))]))
        return line, bars

    def __init__(self, config: PackConfig, run: RunContext | None = None):
        super().__init__(config, run)
        if self.run.output is None:
            raise ValueError("pack writes under the run's output: give RunContext(output=...)")
        self.tokens_dir = self.run.output.join("tokens")

    def mapper(self, shard: ShardContext) -> None:
        return None  # packing needs every token of a rank's shards at once: it reads them in its plan

    def plan(self, ctx: PlanContext) -> Plan:
        shards = ctx.shards
        groups = [shards[r::self.config.ranks] for r in range(self.config.ranks)]
        summaries = ctx.gather("packing", _pack_rank,
                               [(r, self, group, ctx.batch_size) for r, group in enumerate(groups)])
        total: dict = {"strategy": self.config.strategy, "seq_len": self.config.seq_len, "ranks": self.config.ranks,
                       "buckets": {}}
        for s in summaries:
            for key in ("documents", "tokens", "sequences", "slots", "documents_split", "tokens_dropped"):
                total[key] = total.get(key, 0) + s[key]
            for k, n in s["buckets"].items():
                total["buckets"][k] = total["buckets"].get(k, 0) + n
        kept = total["tokens"] - total["tokens_dropped"]
        total["padding_fraction"] = 1 - kept / total["slots"] if total["slots"] else 0.0
        self.tokens_dir.join("summary.json").write_bytes_atomic(json.dumps(total, indent=2).encode())
        return Plan({s.name: [] for s in shards}, total)

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions) -> StageResult:
        return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])
