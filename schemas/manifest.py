"""The per-stage manifest and its per-shard ledger entries.

A ledger entry is written by the worker right after its shard (and rejects) are committed, so
a killed run knows exactly which shards are done. The manifest is written once the whole stage
is done and is the proof that the stage is complete for a given config hash.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FileEntry(BaseModel):
    path: str  # relative to the stage directory
    rows: int
    bytes: int
    sha256: str


class ShardEntry(BaseModel):
    shard: str  # e.g. "part-00003"
    input: str  # input shard URI (no credentials)
    config_hash: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_added: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)  # stage-specific counts (e.g. tokens made)
    kept_by_source: dict[str, int] = Field(default_factory=dict)  # rows kept, by their `source` column
    output: FileEntry | None  # None: the kept rows flowed on to the next stage of the segment, or were unchanged
    rejects: FileEntry | None = None
    run_id: str
    seconds: float

    def check_counts(self, stage: str) -> None:
        if self.rows_in + self.rows_added != self.rows_out + self.rows_rejected:
            raise CountMismatchError(
                f"stage {stage}, shard {self.shard}: rows_in {self.rows_in} + rows_added {self.rows_added} != "
                f"rows_out {self.rows_out} + rows_rejected {self.rows_rejected}"
            )
        if sum(self.rejected_by_reason.values()) != self.rows_rejected:
            raise CountMismatchError(f"stage {stage}, shard {self.shard}: reject reasons do not sum to rows_rejected")


class StageManifest(BaseModel):
    stage: str
    kind: str  # "shard" or "global"
    config_hash: str
    winnow_version: str
    schema_version: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_added: int
    rejected_by_reason: dict[str, int]
    counters: dict[str, int] = Field(default_factory=dict)  # the shards' counters, summed
    kept_by_source: dict[str, int] = Field(default_factory=dict)  # the shards' kept rows by source, summed
    bytes_out: int
    seconds: float
    shards: list[ShardEntry]
    extra: dict = Field(default_factory=dict)  # stage-specific figures (e.g. duplicate groups)
    # where the kept rows are: "written" (this stage's files), "fused" (they went on to the next stage of
    # its segment: that stage's kept rows and rejects), "unchanged" (a pass-through: its input's files)
    kept: Literal["written", "fused", "unchanged"] = "written"
    next_stage: str | None = None  # the stage a "fused" stage's kept rows went on to

    @classmethod
    def from_shards(cls, stage: str, kind: str, config_hash: str, shards: list[ShardEntry], seconds: float,
                    extra: dict | None = None, kept: str = "written",
                    next_stage: str | None = None) -> StageManifest:
        from winnow import __version__
        from winnow.schemas.documents import SCHEMA_VERSION

        reasons: dict[str, int] = {}
        counters: dict[str, int] = {}
        sources: dict[str, int] = {}
        for entry in shards:
            entry.check_counts(stage)
            for total, part in ((reasons, entry.rejected_by_reason), (counters, entry.counters),
                                (sources, entry.kept_by_source)):
                for name, n in part.items():
                    total[name] = total.get(name, 0) + n
        manifest = cls(
            stage=stage, kind=kind, config_hash=config_hash, winnow_version=__version__,
            schema_version=SCHEMA_VERSION,
            rows_in=sum(s.rows_in for s in shards), rows_out=sum(s.rows_out for s in shards),
            rows_rejected=sum(s.rows_rejected for s in shards), rows_added=sum(s.rows_added for s in shards),
            rejected_by_reason=dict(sorted(reasons.items())), counters=dict(sorted(counters.items())),
            kept_by_source=dict(sorted(sources.items())),
            bytes_out=sum(s.output.bytes for s in shards if s.output), seconds=round(seconds, 3),
            shards=sorted(shards, key=lambda s: s.shard), extra=extra or {}, kept=kept,
            next_stage=next_stage,
        )
        if manifest.rows_in + manifest.rows_added != manifest.rows_out + manifest.rows_rejected:
            raise CountMismatchError(f"stage {stage}: rows_in + rows_added != rows_out + rows_rejected")
        return manifest


class CountMismatchError(RuntimeError):
    """A stage's counts do not add up: rows were lost or invented."""
