"""Reading and writing a stage's ledger entries and manifest; what resume may skip."""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from winnow.schemas.manifest import ShardEntry, StageManifest
from winnow.storage.fs import Location

MANIFEST = "_manifest.json"
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


def committed_shards(stage_dir: Location, config_hash: str) -> dict[str, ShardEntry]:
    """Ledger entries of this config whose output files exist with the recorded size."""
    ledger = stage_dir.join(LEDGER)
    if not ledger.exists():
        return {}
    entries = {}
    for info in stage_dir.fs.get_file_info(pafs.FileSelector(ledger.path)):
        if not info.base_name.endswith(".json"):
            continue
        entry = ShardEntry.model_validate(json.loads(ledger.join(info.base_name).read_bytes()))
        files = [entry.output] + ([entry.rejects] if entry.rejects else [])
        if entry.config_hash == config_hash and all(_size(stage_dir.join(f.path)) == f.bytes for f in files):
            entries[entry.shard] = entry
    return entries


def _size(loc: Location) -> int | None:
    info = loc.fs.get_file_info(loc.path)
    return info.size if info.type == pafs.FileType.File else None


def reset_stage(stage_dir: Location) -> None:
    """Remove a stage's outputs made under another config (its hash changed)."""
    if stage_dir.exists():
        stage_dir.delete()
