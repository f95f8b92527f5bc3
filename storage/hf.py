"""Hugging Face `datasets` directories, read as a run's input and written as its output.

Read: a directory written by `save_to_disk` (a Dataset: `state.json` naming its Arrow files; a
DatasetDict: `dataset_dict.json` naming its splits) or a local copy of a Hub dataset repository
(Parquet/JSONL/Arrow files with its `README.md`, whose `configs:` YAML says which files make which
split; without it, a file belongs to a split whose name is a word of its path, as on the Hub, and
with no split asked for the directory is not treated as a dataset at all: `input.glob` applies).

Write: the `save_to_disk` layout (Arrow IPC stream files, `state.json`, `dataset_info.json`), so
`datasets.load_from_disk(path)` opens the run's output with no conversion. Only `datasets`' file
layout is used here: neither reading nor writing needs the `datasets` package or the network.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re

import pyarrow as pa
import yaml

from winnow.storage.fs import Location
from winnow.storage.shards import detect_format, iter_parquet_batches, parquet_schema, publish, temp_path_for

DATA_FORMATS = ("parquet", "jsonl", "arrow")


class DatasetLayoutError(ValueError):
    """A datasets directory whose files or metadata do not say what to read."""


def dataset_files(root: Location, split: str | None = None, config_name: str | None = None) -> list[Location] | None:
    """The data files of the `datasets` directory at `root` (one split, or all), or None if it is not one."""
    if root.join("dataset_dict.json").exists():
        splits = _metadata(root.join("dataset_dict.json"), "splits")
        chosen = _choose(splits, split, root)
        return [f for name in chosen for f in _saved_files(root.join(name))]
    if root.join("state.json").exists():
        if split is not None:
            raise DatasetLayoutError(f"{root.uri} is a single saved Dataset: it has no splits (unset input.split)")
        return _saved_files(root)
    if root.join("README.md").exists():
        return _hub_files(root, split, config_name)
    return None


def _saved_files(root: Location) -> list[Location]:
    try:
        return [root.join(entry["filename"]) for entry in _metadata(root.join("state.json"), "_data_files")]
    except (KeyError, TypeError):
        raise DatasetLayoutError(f"{root.join('state.json').uri}: a `_data_files` entry has no `filename`") from None


def _metadata(loc: Location, key: str):
    """`key` of a datasets JSON metadata file; a file that is not JSON or lacks it is an error naming it."""
    try:
        return json.loads(loc.read_bytes())[key]
    except ValueError as err:
        raise DatasetLayoutError(f"{loc.uri}: not valid JSON ({err})") from None
    except (KeyError, TypeError):
        raise DatasetLayoutError(f"{loc.uri}: no {key!r} in it (is it a datasets directory?)") from None


def _choose(splits: list[str], split: str | None, root: Location) -> list[str]:
    if split is None:
        return list(splits)
    if split not in splits:
        raise DatasetLayoutError(f"{root.uri} has no split {split!r} (splits: {', '.join(splits)})")
    return [split]


def _hub_files(root: Location, split: str | None, config_name: str | None) -> list[Location] | None:
    files = [f for f in root.list_files() if _data_format(f)]
    rel = {f.uri: f.uri[len(root.uri.rstrip("/")) + 1:] for f in files}
    configs = _card(root).get("configs") or []
    if not configs:
        if config_name is not None:
            raise DatasetLayoutError(f"{root.uri}: README.md declares no configs, so there is no {config_name!r}")
        if split is None:
            return None  # nothing to choose: the directory is read as any other, `input.glob` and all
        word = re.compile(rf"(^|[/_.\-]){re.escape(split)}([/_.\-]|$)")
        return [f for f in files if word.search(rel[f.uri])]
    names = [c.get("config_name", "default") for c in configs]
    if config_name is None:
        config = next((c for c in configs if c.get("default")), None) or next(
            (c for c in configs if c.get("config_name", "default") == "default"), configs[0])
    elif config_name in names:
        config = configs[names.index(config_name)]
    else:
        raise DatasetLayoutError(f"{root.uri}: no config {config_name!r} in README.md (configs: {', '.join(names)})")
    by_split = _split_patterns(config.get("data_files"))
    chosen = _choose(list(by_split), split, root)
    patterns = [p for name in chosen for p in by_split[name]]
    return [f for f in files if any(fnmatch.fnmatch(rel[f.uri], p) for p in patterns)]


def _split_patterns(data_files) -> dict[str, list[str]]:
    """A config's `data_files` (a pattern, a list of them, or {split, path} entries) by split."""
    if data_files is None or isinstance(data_files, str):
        return {"train": [data_files or "*"]}
    if all(isinstance(p, str) for p in data_files):
        return {"train": list(data_files)}
    return {e["split"]: [e["path"]] if isinstance(e["path"], str) else list(e["path"]) for e in data_files}


def _card(root: Location) -> dict:
    """The YAML header of the dataset card."""
    text = root.join("README.md").read_bytes().decode("utf-8")
    match = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    try:
        card = (yaml.safe_load(match.group(1)) or {}) if match else {}
    except yaml.YAMLError as err:
        raise DatasetLayoutError(f"{root.join('README.md').uri}: its YAML header is not valid YAML ({err})") from None
    if not isinstance(card, dict):
        raise DatasetLayoutError(f"{root.join('README.md').uri}: its YAML header is not a mapping")
    return card


def _data_format(loc: Location) -> bool:
    try:
        return detect_format(loc) in DATA_FORMATS
    except ValueError:
        return False


# ---------------------------------------------------------------- writing

def write_part(source: Location, target: Location, batch_size: int) -> int:
    """One kept Parquet shard as one Arrow IPC stream file (what `save_to_disk` writes), streamed
    batch by batch through a temporary file that becomes visible whole; its rows."""
    tmp = temp_path_for(target)
    rows = 0
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, parquet_schema(source)) as writer:
            for batch in iter_parquet_batches(source, batch_size):
                writer.write_batch(batch)
                rows += batch.num_rows
        publish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows


def part_names(count: int) -> list[str]:
    return [f"data-{i:05d}-of-{count:05d}.arrow" for i in range(count)]


def write_metadata(target: Location, count: int, description: str) -> None:
    """state.json and dataset_info.json: `load_from_disk` then reads the parts and infers the features
    from their Arrow schema."""
    state = {"_data_files": [{"filename": name} for name in part_names(count)], "_fingerprint": None,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": None}
    info = {"citation": "", "description": description, "features": None, "homepage": "", "license": ""}
    target.join("dataset_info.json").write_bytes_atomic(json.dumps(info, indent=2).encode())
    target.join("state.json").write_bytes_atomic(json.dumps(state, indent=2).encode())
