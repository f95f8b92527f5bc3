"""Reading and writing a stage's ledger entries and manifest; what resume may skip."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from winnow.schemas.manifest import ShardEntry, StageManifest
from winnow.storage.fs import Location, resolve

MANIFEST = "_manifest.json"  # OUT/<stage>/_manifest.json: the stage's counts and figures
STAGE_CONFIG = "_stage.json"  # OUT/<stage>/_stage.json: the config hash its outputs were made under
RUN_SUMMARY = "_run.json"  # OUT/_run.json: the finished run's summary (stages in order, config)
LEDGER = "_ledger"


def read_manifest(stage_dir: Location) -> StageManifest | None:
    loc = stage_dir.join(MANIFEST)
    if not loc.exists():
        return None
    return StageManifest.model_validate_json(loc.read_bytes())


def write_manifest(stage_dir: Location, manifest: StageManifest) -> None:
    stage_dir.join(MANIFEST).write_bytes_atomic(manifest.model_dump_json(indent=2).encode())


def write_ledger_entry(stage_dir: Location, entry: ShardEntry) -> None:
    stage_dir.join(LEDGER, f"{entry.shard}.json").write_bytes_atomic(entry.model_dump_json().encode())


def committed_shards(stage_dir: Location, config_hash: str, written: bool = True) -> dict[str, ShardEntry]:
    """Ledger entries of this config whose files exist with the recorded size (and, when `written`,
    that have a kept output)."""
    ledger = stage_dir.join(LEDGER)
    if not ledger.exists():
        return {}
    entries = {}
    for info in stage_dir.fs.get_file_info(pafs.FileSelector(ledger.path)):
        if not info.base_name.endswith(".json"):
            continue
        entry = ShardEntry.model_validate(json.loads(ledger.join(info.base_name).read_bytes()))
        if written and entry.output is None:
            continue
        files = [f for f in (entry.output, entry.rejects) if f is not None]
        if entry.config_hash == config_hash and all(_size(stage_dir.join(f.path)) == f.bytes for f in files):
            entries[entry.shard] = entry
    return entries


def kept_files(output: Location, stage: str) -> list[Location]:
    """The files that hold the rows a stage kept, in shard order: its own outputs when it wrote them;
    a fused stage's are the next stage's kept rows and rejects (as that stage left them: a stage that
    splits or adds documents shows its parts); a pass-through stage's are its input's."""
    manifest = read_manifest(output.join(stage))
    if manifest is None:
        raise FileNotFoundError(f"no manifest for stage {stage!r} under {output.uri}: it has not finished")
    if manifest.kept == "written":
        return [output.join(stage, e.output.path) for e in manifest.shards]
    if manifest.kept == "unchanged":  # its input: an earlier stage's files under the same output
        root = output.uri.rstrip("/") + "/"
        return [output.join(e.input[len(root):]) if e.input.startswith(root) else resolve(e.input)
                for e in manifest.shards]
    later = read_manifest(output.join(manifest.next_stage))
    rejects = [output.join(manifest.next_stage, e.rejects.path) for e in later.shards if e.rejects]
    return kept_files(output, manifest.next_stage) + rejects


def rejects_files(output: Location, stage: str) -> list[Location]:
    """The stage's rejects files, in shard order (from its manifest)."""
    manifest = read_manifest(output.join(stage))
    if manifest is None:
        raise FileNotFoundError(f"no manifest for stage {stage!r} under {output.uri}: it has not finished")
    return [output.join(stage, e.rejects.path) for e in manifest.shards if e.rejects]


def read_kept(output: Location, stage: str, columns: list[str]) -> pa.Table:
    """`columns` of every row a stage kept (see `kept_files`), as one table."""
    tables = []
    for loc in kept_files(output, stage):
        with loc.open_read() as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables, promote_options="permissive")


def _size(loc: Location) -> int | None:
    info = loc.fs.get_file_info(loc.path)
    return info.size if info.type == pafs.FileType.File else None


def reset_stage(stage_dir: Location) -> None:
    """Remove a stage's outputs made under another config (its hash changed)."""
    if stage_dir.exists():
        stage_dir.delete()
