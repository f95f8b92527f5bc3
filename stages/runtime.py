"""Executes stages over shards on Ray: bounded in-flight tasks, progress, retries, resume.

A per-shard stage runs one Ray task per uncommitted input shard. A global stage runs a map task
per shard (small key records, partitioned by key), one reduce task per partition, then the
per-shard apply tasks; only integers, hashes and ids cross the shuffle, never document text.
Each apply/shard task commits its output and rejects, then its ledger entry, so a killed run
resumes from the last committed shard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import ray
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from winnow.schemas.manifest import FileEntry, ShardEntry, StageManifest
from winnow.stages.base import DECISION_SCHEMA, GlobalStage, Stage
from winnow.storage.fs import Location, StorageError
from winnow.storage.manifest import (
    committed_shards,
    read_manifest,
    reset_stage,
    write_ledger_entry,
    write_manifest,
)
from winnow.storage.shards import ShardWriter

STAGE_CONFIG = "_stage.json"
SUBPACKAGES = ("schemas", "storage", "stages", "scorers", "gpu", "flows")  # pyproject's package-dir map


class StageFailedError(RuntimeError):
    """A shard failed for good (after Ray's retries); names the stage, the shard and the cause."""


# Besides a dead worker, Ray retries a task that raised one of these: a store still failing after
# the storage layer's own retries. Tasks are idempotent (outputs are committed whole), so it is safe.
RETRIED = [StorageError]


@dataclass(frozen=True)
class Shard:
    name: str  # "part-00007"
    source: Location  # where its input is read from


@dataclass
class RuntimeOptions:
    run_id: str
    batch_size: int = 2048
    max_in_flight: int | None = None
    max_retries: int = 3
    shuffle_partitions: int | None = None
    progress: bool = True

    def in_flight(self) -> int:
        return self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray if any; else join `address` (or RAY_ADDRESS), else start a local one."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"include_dashboard": False, "log_to_driver": True}
    with tempfile.TemporaryDirectory(prefix="winnow-code-") as tmp:
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:  # a cluster runs the driver's winnow, whatever its nodes have installed
            kwargs["runtime_env"] = {"py_modules": [package_snapshot(tmp)]}
        ray.init(address=address, **kwargs)
        try:
            yield
        finally:
            ray.shutdown()


def package_snapshot(directory: str) -> str:
    """A copy of the imported `winnow` package (its sub-packages live in separate source folders in
    a checkout), for Ray's runtime environment to ship to cluster workers."""
    import importlib
    import shutil

    import winnow

    root = os.path.join(directory, "winnow")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(winnow.__path__[0], root, ignore=ignore)
    for name in SUBPACKAGES:
        source = importlib.import_module(f"winnow.{name}").__path__[0]
        target = os.path.join(root, name)
        if not os.path.exists(target):
            shutil.copytree(source, target, ignore=ignore)
    return root


def run_stage(stage: Stage, shards: list[Shard], stage_dir: Location, config_hash: str,
              options: RuntimeOptions) -> tuple[StageManifest, bool]:
    """Run (or resume, or skip) one stage; returns its manifest and whether it was skipped."""
    manifest = read_manifest(stage_dir)
    if manifest is not None and manifest.config_hash == config_hash:
        return manifest, True
    _claim_stage_dir(stage_dir, stage, config_hash)
    started = time.time()
    done = committed_shards(stage_dir, config_hash)
    todo = [s for s in shards if s.name not in done]
    extra: dict = {}
    with _progress(options, stage.name, len(shards), len(done)) as advance:
        if stage.kind == "global":
            entries, extra = _run_global(stage, shards, todo, stage_dir, config_hash, options, advance)
        else:
            entries = _run_tasks(stage, todo, stage_dir, config_hash, options, advance, decisions=None)
    entries = list(done.values()) + entries
    manifest = StageManifest.from_shards(stage.name, stage.kind, config_hash, entries, time.time() - started, extra)
    write_manifest(stage_dir, manifest)
    return manifest, False


def _claim_stage_dir(stage_dir: Location, stage: Stage, config_hash: str) -> None:
    """Outputs made under another config are invalid: clear them, then record this config."""
    marker = stage_dir.join(STAGE_CONFIG)
    if marker.exists() and json.loads(marker.read_bytes()).get("config_hash") == config_hash:
        return
    reset_stage(stage_dir)
    stage_dir.mkdir()
    marker.write_bytes_atomic(json.dumps({"stage": stage.name, "config_hash": config_hash}).encode())


# ---------------------------------------------------------------- per-shard tasks


def process_shard(stage: Stage, shard: Shard, stage_dir: Location, config_hash: str, run_id: str,
                  batch_size: int, decisions: pa.Table | None = None) -> ShardEntry:
    """Stream one shard through a stage; commit its rejects, then its output, then the ledger entry."""
    started = time.time()
    out_loc = stage_dir.join(f"{shard.name}.parquet")
    rej_loc = stage_dir.join("rejects", f"{shard.name}.parquet")
    writer: ShardWriter | None = None
    rejects: ShardWriter | None = None
    rows_in, rows_added, reasons, counters = 0, 0, {}, {}
    context = {} if decisions is None else {"decisions": decisions}
    try:
        for result in stage.process_shard(shard.source, batch_size, **context):
            rows_in += result.rows_in
            rows_added += result.rows_added
            for name, n in result.counters.items():
                counters[name] = counters.get(name, 0) + n
            if writer is None:
                writer = ShardWriter(out_loc, stage.output_schema(result.kept.schema))
            writer.write(result.kept)
            if result.rejects.num_rows:
                if rejects is None:
                    rejects = ShardWriter(rej_loc, result.rejects.schema)
                rejects.write(result.rejects)
                for reason in result.rejects.column("reject_reason").to_pylist():
                    reasons[reason] = reasons.get(reason, 0) + 1
        if writer is None:  # an empty input shard still yields an (empty) output shard
            writer = ShardWriter(out_loc, stage.output_schema(pa.schema([])))
        rej_info = rejects.commit() if rejects else None
        out_info = writer.commit()
    except BaseException:
        for w in (writer, rejects):
            if w is not None:
                w.abort()
        raise
    entry = ShardEntry(
        shard=shard.name, input=shard.source.uri, config_hash=config_hash, rows_in=rows_in,
        rows_out=out_info["rows"], rows_rejected=rej_info["rows"] if rej_info else 0, rows_added=rows_added,
        rejected_by_reason=dict(sorted(reasons.items())), counters=dict(sorted(counters.items())),
        output=FileEntry(path=f"{shard.name}.parquet", **out_info),
        rejects=FileEntry(path=f"rejects/{shard.name}.parquet", **rej_info) if rej_info else None,
        run_id=run_id, seconds=round(time.time() - started, 3),
    )
    entry.check_counts(stage.name)
    write_ledger_entry(stage_dir, entry)
    return entry


def task_resources(stage: Stage) -> dict:
    """The stage's resource request, without GPUs when the cluster has none (CPU fallback)."""
    resources = dict(stage.resources())
    if resources.get("num_gpus") and not ray.cluster_resources().get("GPU"):
        logging.getLogger("winnow").warning("stage %s asks for GPUs but the Ray cluster has none: running on CPU",
                                            stage.name)
        resources.pop("num_gpus")
    return resources


def _run_tasks(stage: Stage, todo: list[Shard], stage_dir: Location, config_hash: str, options: RuntimeOptions,
               advance: Callable[[int], None], decisions: dict[str, list] | None = None) -> list[ShardEntry]:
    """One task per shard (with its routed decisions for a global stage's apply phase)."""
    stage_ref = ray.put(stage)
    task = _shard_task.options(max_retries=options.max_retries, retry_exceptions=RETRIED, **task_resources(stage))

    def submit(shard: Shard):
        parts = decisions[shard.name] if decisions is not None else []
        ref = task.remote(stage_ref, shard, stage_dir, config_hash, options.run_id, options.batch_size, *parts)
        return ref, None

    entries = []
    for _, entry, _ in _bounded(stage.name, todo, submit, options.in_flight()):
        entries.append(entry)
        advance(entry.rows_in)
    return entries


@ray.remote
def _shard_task(stage, shard, stage_dir, config_hash, run_id, batch_size, *decision_parts):
    decisions = concat(decision_parts) if decision_parts else None
    return process_shard(stage, shard, stage_dir, config_hash, run_id, batch_size, decisions=decisions)


def _bounded(stage_name: str, shards: list[Shard], submit: Callable,
             limit: int) -> Iterator[tuple[Shard, object, object]]:
    """Keep at most `limit` tasks in flight; yield (shard, small result, payload refs) as each ends.

    `submit(shard)` returns (ref of a small result, payload): only the small result is fetched
    here, so large task outputs (shuffle partitions) stay in Ray's object store.
    """
    pending: dict = {}
    queue = iter(shards)
    while True:
        while len(pending) < limit and (shard := next(queue, None)) is not None:
            ref, payload = submit(shard)
            pending[ref] = (shard, payload)
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard, payload = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - re-raised with the shard named
            for other in pending:
                ray.cancel(other, force=True)
            raise StageFailedError(_failure_message(stage_name, shard, err)) from err
        yield shard, result, payload


def _failure_message(stage_name: str, shard: Shard, err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        what = f"its worker died and Ray's retries were exhausted ({type(err).__name__})"
    else:
        text = str(cause).strip()
        what = f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    return f"stage {stage_name!r} failed on shard {shard.name} ({shard.source.uri}): {what}"


# ---------------------------------------------------------------- global stages
#
# Shuffle building blocks. A "partitioned" result is a list (one per producer) of lists (one per
# consumer partition) of object refs; consumers receive their column as task arguments, so only
# the data a task needs is moved to it, and the driver never fetches the data itself.


def partition_count(shards: list[Shard], options: RuntimeOptions) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return options.shuffle_partitions or max(1, min(len(shards), 2 * cpus))


def map_shards(name: str, shards: list[Shard], fn: Callable, outputs: int, options: RuntimeOptions, *args,
               per_shard_args: dict[str, list] | None = None, resources: dict | None = None) -> tuple[list[list], list]:
    """Run `fn(shard_index, shard, *args, *per_shard_args[shard])` per shard (bounded in flight).

    `fn` returns `outputs` tables and then a small figure; returns the table refs per shard (in
    shard order) and the figures. A failure names the shard.
    """
    task = ray.remote(fn).options(num_returns=outputs + 1, max_retries=options.max_retries, retry_exceptions=RETRIED,
                                  **(resources or {}))
    index = {s.name: i for i, s in enumerate(shards)}

    def submit(shard: Shard):
        extra = (per_shard_args or {}).get(shard.name, [])
        refs = task.remote(index[shard.name], shard, *args, *extra)
        return refs[-1], refs[:-1]

    parts: list[list] = [[] for _ in shards]
    figures: list = [None] * len(shards)
    for shard, figure, refs in _bounded(name, shards, submit, options.in_flight()):
        parts[index[shard.name]] = refs
        figures[index[shard.name]] = figure
    return parts, figures


def exchange(name: str, phase: str, fn: Callable, inputs: list[list], outputs: int, options: RuntimeOptions,
             *args) -> tuple[list[list], list]:
    """One task per input partition p: `fn(p, *args, *[producer[p] for producer in inputs])`.

    `fn` returns `outputs` tables then a small figure; returns the refs per task and the figures.
    """
    partitions = len(inputs[0]) if inputs else 0
    task = ray.remote(fn).options(num_returns=outputs + 1, max_retries=options.max_retries, retry_exceptions=RETRIED)
    refs = [task.remote(p, *args, *[producer[p] for producer in inputs]) for p in range(partitions)]
    figures = get_phase(name, phase, [r[-1] for r in refs])
    return [r[:-1] for r in refs], figures


def get_phase(name: str, phase: str, refs: list) -> list:
    """`ray.get` of a phase's results; a failure becomes a StageFailedError naming stage and phase."""
    try:
        return ray.get(refs)
    except Exception as err:  # noqa: BLE001 - re-raised with the phase named
        cause = getattr(err, "cause", None) or err
        raise StageFailedError(f"stage {name!r} failed in its {phase} phase: {type(cause).__name__}: {cause}") from err


def split_by(table: pa.Table, column: str, parts: int, key: Callable | None = None) -> list[pa.Table]:
    """Rows of `table` routed to `parts` tables by `key(column values) % parts`."""
    values = table.column(column).to_numpy()
    target = (key(values) if key else values) % parts
    return [table.filter(pa.array(target == p)) for p in range(parts)]


def concat(parts) -> pa.Table | None:
    tables = [p for p in parts if p is not None]
    return pa.concat_tables(tables) if tables else None


def _key_map_task(shard_index: int, shard: Shard, stage: GlobalStage, batch_size: int, partitions: int):
    """Key records of one shard split into partitions by key, plus the row count last."""
    from winnow.storage.shards import iter_parquet_batches

    tables, offset = [], 0
    for batch in iter_parquet_batches(shard.source, batch_size, columns=stage.map_columns):
        keys = stage.map_keys(pa.Table.from_batches([batch]))
        n = keys.num_rows
        keys = keys.append_column("_shard", pa.array([shard_index] * n, pa.int32()))
        keys = keys.append_column("_row", pa.array(range(offset, offset + n), pa.int64()))
        tables.append(keys)
        offset += n
    if not tables:
        return [None] * partitions + [0]
    return split_by(pa.concat_tables(tables), "key", partitions) + [offset]


def _key_reduce_task(p: int, stage: GlobalStage, n_shards: int, *parts):
    """Decisions of one key partition routed to their shards, plus the partition's figures last."""
    keys = concat(parts)
    decisions, figures = stage.reduce(keys) if keys is not None else (DECISION_SCHEMA.empty_table(), {})
    return split_by(decisions, "_shard", n_shards) + [figures]


def key_shuffle_plan(stage: GlobalStage, shards: list[Shard], options: RuntimeOptions) -> tuple[dict, dict]:
    """map_keys per shard -> partition by key -> reduce per partition -> decisions per shard."""
    partitions = partition_count(shards, options)
    stage_ref = ray.put(stage)
    parts, _ = map_shards(stage.name, shards, _key_map_task, partitions, options,
                          stage_ref, options.batch_size, partitions)
    reduced, figures = exchange(stage.name, "reduce", _key_reduce_task, parts, len(shards), options,
                                stage_ref, len(shards))
    return {s.name: [r[i] for r in reduced] for i, s in enumerate(shards)}, sum_figures(figures)


def sum_figures(figures: list[dict]) -> dict:
    total: dict = {}
    for figure in figures:
        for key, value in (figure or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def _run_global(stage: GlobalStage, shards: list[Shard], todo: list[Shard], stage_dir: Location, config_hash: str,
                options: RuntimeOptions, advance: Callable[[int], None]) -> tuple[list[ShardEntry], dict]:
    """The stage's plan computes decisions over all shards; then the uncommitted shards apply them."""
    decisions, extra = stage.plan(shards, options)
    todo_decisions = {s.name: decisions[s.name] for s in todo}
    return _run_tasks(stage, todo, stage_dir, config_hash, options, advance, todo_decisions), extra


# ---------------------------------------------------------------- progress


class _DocsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        docs = task.fields.get("docs", 0)
        elapsed = task.elapsed or 0
        return Text(f"{docs / elapsed:,.0f} docs/s" if elapsed > 0 else "", style="cyan")


@contextlib.contextmanager
def _progress(options: RuntimeOptions, name: str, total: int, done: int) -> Iterator[Callable[[int], None]]:
    """A shard progress bar with docs/s (stderr); `advance(docs)` after each finished shard."""
    if not options.progress:
        yield lambda docs: None
        return
    columns = [TextColumn(f"[bold]{name:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
               _DocsPerSecond(), TimeElapsedColumn()]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(name, total=total, completed=done, docs=0)

        def advance(docs: int) -> None:
            progress.update(task, advance=1, docs=progress.tasks[0].fields["docs"] + docs)

        yield advance
