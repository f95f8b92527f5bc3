"""`winnow inspect`: sample documents from a run's outputs, and one document's path through the stages.

Everything is read from what the run wrote (manifests, rejects shards, the files holding each
stage's kept rows; local or S3), a column at a time where only ids are needed, so inspecting a
large run reads ids and the few rows shown, not the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from winnow.schemas.documents import DOCUMENT_SCHEMA, REJECT_COLUMNS
from winnow.storage.fs import Location
from winnow.storage.manifest import MANIFEST, RUN_SUMMARY, STAGE_CONFIG, kept_files
from winnow.storage.manifest import rejects_files as stage_rejects

SNIPPET = 160  # characters of text shown per document
NOT_ANNOTATIONS = set(DOCUMENT_SCHEMA.names) | {f.name for f in REJECT_COLUMNS}


def snippet(text: str | None, width: int = SNIPPET) -> str:
    """The text on one line, cut at `width` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_stages(out: Location) -> list[str]:
    """The run's stages in order (from `_run.json`; for a run that has not finished, the stages with a
    manifest, in the order of the config they ran under)."""
    run_file = out.join(RUN_SUMMARY)
    if run_file.exists():
        return list(json.loads(run_file.read_bytes())["stages"])
    entries = out.fs.get_file_info(pafs.FileSelector(out.path, allow_not_found=True))
    names = [e.base_name for e in entries
             if e.type == pafs.FileType.Directory and out.join(e.base_name, MANIFEST).exists()]
    if not names:
        raise FileNotFoundError(f"no winnow run at {out.uri}: no {RUN_SUMMARY} and no stage manifests")

    def position(name: str) -> tuple[int, str]:
        marker = out.join(name, STAGE_CONFIG)
        return json.loads(marker.read_bytes()).get("position", 1 << 30) if marker.exists() else 1 << 30, name

    return sorted(names, key=position)


def rejects_files(out: Location, stage: str) -> list[Location]:
    """The stage's rejects files; an unknown stage's error lists the run's stages."""
    try:
        return stage_rejects(out, stage)
    except FileNotFoundError:
        raise FileNotFoundError(f"stage {stage!r} has no manifest under {out.uri} (stages: {run_stages(out)})") \
            from None


def _read(loc: Location, column: str | None = None, value: str | None = None, limit: int | None = None) -> pa.Table:
    """Rows of one Parquet file (those whose `column` equals `value`, when given; at most about `limit`):
    the column alone is read first, the other columns only of row groups holding a match."""
    keep = (lambda t: pc.equal(t.column(column), value)) if column is not None else None
    tables, n = [], 0
    for table in row_groups(loc, [column] if column is not None else None, keep=keep):
        tables.append(table)
        n += table.num_rows
        if limit is not None and n >= limit:
            break
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


@dataclass
class ReadCounter:
    """Compressed bytes of the column chunks read, and the size of the files they came from (each once)."""

    read: int = 0
    files: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.files.values())

    def describe(self) -> str:
        return (f"read {_size(self.read)} of column chunks (compressed) from {len(self.files):,} files holding "
                f"{_size(self.total)}")


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def row_groups(loc: Location, columns: list[str] | None = None, counter: ReadCounter | None = None,
               keep: Callable[[pa.Table], pa.Array] | None = None,
               more: list[str] | None = None) -> Iterator[pa.Table]:
    """A Parquet file row group by row group: `columns` (those it has; None: all). When `keep(table)`
    selects rows, only those rows, with `more` columns too (None: every other column), read only for the
    row groups holding a selected row."""
    with loc.open_read() as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        wanted = [c for c in columns if c in names] if columns is not None else names
        extra = [c for c in (names if more is None else more) if c in names and c not in wanted]
        if counter is not None:
            counter.files[loc.uri] = compressed_size(pf.metadata)
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=wanted)
            _count(pf, g, wanted, counter)
            if keep is not None:
                mask = keep(table)
                if not pc.any(mask).as_py():
                    continue
                if extra:
                    table = pf.read_row_group(g, columns=wanted + extra)
                    _count(pf, g, extra, counter)
                table = table.filter(mask)
            yield table


def compressed_size(meta: pq.FileMetaData) -> int:
    """The compressed bytes of every column chunk of a Parquet file (its size, less the footer)."""
    return sum(meta.row_group(g).column(i).total_compressed_size
               for g in range(meta.num_row_groups) for i in range(meta.num_columns))


def _count(pf: pq.ParquetFile, group: int, columns: list[str], counter: ReadCounter | None) -> None:
    if counter is None:
        return
    meta = pf.metadata.row_group(group)
    for i in range(meta.num_columns):
        if meta.column(i).path_in_schema.split(".")[0] in columns:
            counter.read += meta.column(i).total_compressed_size


@dataclass
class Sample:
    stage: str
    id: str
    source: str
    snippet: str
    reason: str | None = None
    detail: str | None = None
    annotations: dict = field(default_factory=dict)


def as_samples(stage: str, table: pa.Table) -> Iterator[Sample]:
    """Rows as samples; their annotations are the scalar columns stages added (scores, clusters,
    languages), which say what decided (token id lists and the like are left out)."""
    scalar = [f.name for f in table.schema if f.name not in NOT_ANNOTATIONS
              and not (pa.types.is_nested(f.type) or pa.types.is_binary(f.type))]
    for row in table.to_pylist():
        yield Sample(stage, row["id"], row.get("source") or "", snippet(row.get("text")), row.get("reject_reason"),
                     row.get("reject_detail"), {k: row[k] for k in scalar if row[k] is not None})


def rejected_samples(out: Location, stage: str, reason: str | None = None, n: int = 3) -> list[Sample]:
    """Up to `n` documents the stage dropped for each of its reasons (or for `reason` only), in shard order."""
    found: dict[str, list[Sample]] = {}
    for loc in rejects_files(out, stage):
        for sample in as_samples(stage, _read(loc, "reject_reason", reason) if reason else _read(loc)):
            if len(found.setdefault(sample.reason, [])) < n:
                found[sample.reason].append(sample)
    return [s for reason_samples in found.values() for s in reason_samples]


def kept_samples(out: Location, stage: str, n: int = 3) -> list[Sample]:
    """Up to `n` documents the stage kept (read where they ended: a later stage's output or rejects)."""
    samples: list[Sample] = []
    for loc in kept_files(out, stage):
        table = _read(loc, limit=n - len(samples))
        table = table.drop_columns([c for c in ("reject_stage", "reject_reason", "reject_detail")
                                    if c in table.schema.names])
        samples += list(as_samples(stage, table))[: n - len(samples)]
        if len(samples) >= n:
            break
    return samples


def describe(annotations: dict) -> str:
    """Annotations as `name=value`, floats to four significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in annotations.items())


@dataclass
class Visit:
    """What one stage did with a document (a line of `winnow inspect --id`)."""
    stage: str
    outcome: str  # "kept", "dropped", "not seen" (dropped earlier)
    detail: str = ""


def trace(out: Location, doc_id: str) -> tuple[list[Visit], Sample | None]:
    """A document's path through the run's stages: kept by each until the one that dropped it (with its
    reason and detail: the rule, the score against its cut-off, the survivor of its duplicate cluster).
    Returns the steps and the document as last seen (None when no stage saw it)."""
    steps: list[Visit] = []
    for stage in run_stages(out):
        for loc in rejects_files(out, stage):
            hit = _read(loc, "id", doc_id)
            if hit.num_rows:
                sample = next(as_samples(stage, hit.slice(0, 1)))
                steps.append(Visit(stage, "dropped", f"{sample.reason}: {sample.detail or ''}".rstrip(": ")))
                return steps, sample
        steps.append(Visit(stage, "kept"))
    for loc in kept_files(out, steps[-1].stage) if steps else []:
        hit = _read(loc, "id", doc_id)
        if hit.num_rows:  # kept to the end; its annotations say what each stage found (scores, its cluster)
            return steps, next(as_samples(steps[-1].stage, hit.slice(0, 1)))
    return [], None
