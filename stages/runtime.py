"""Executes stages over shards on Ray, segment by segment: bounded in-flight tasks, progress,
retries, resume.

A segment is a run of stages that one Ray task per shard executes together, tables flowing from
stage to stage in memory: the apply phases of one or more global stages, then the per-shard stages
after them (the first segment starts with the source stage). A segment ends before the next global
stage, after a stage with `checkpoint: true`, and at the end of the run. Only its last stage writes
the documents it kept; every stage writes its own rejects and its own ledger entries and manifest.

A global stage's plan (map -> shuffle -> reduce) runs before its segment: only integers, hashes, ids
and scores cross the shuffle, never document text. Its map phase runs inside the segment before it
where it can ("keys computed on the way"), on the documents as they are written, so the corpus is
not read again just to compute keys. A global stage that directly follows another plans over its
predecessor's input with the predecessor's decisions applied while reading (nothing in between is
written).

A segment's shard commits as a unit: every stage's rejects and the kept output are written whole,
then each stage's ledger entry; a shard counts as done only when every stage of its segment has its
entry, so a killed run resumes from the last committed shard and rewrites the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import ray
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from winnow.schemas.manifest import FileEntry, ShardEntry, StageManifest
from winnow.stages.actors import model_pools
from winnow.stages.base import DECISION_SCHEMA, GlobalStage, Stage
from winnow.storage.fs import Location, StorageError
from winnow.storage.manifest import (
    committed_shards,
    read_manifest,
    reset_stage,
    write_ledger_entry,
    write_manifest,
)
from winnow.storage.shards import ShardWriter, iter_parquet_batches, parquet_rows

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
    # global stages' apply phases not yet written: (stage, decision refs), run on the rows as they are read
    pending: tuple = ()


def shard_tables(shard: Shard, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A shard's rows, table by table (only `columns`), with its pending apply phases run on them
    (those read every column: a stage's apply sees whole documents)."""
    read = columns if not shard.pending else None
    tables = (pa.Table.from_batches([b]) for b in iter_parquet_batches(shard.source, batch_size, columns=read))
    for stage, refs in shard.pending:
        decisions = concat(ray.get(list(refs))) if refs else None
        tables = (r.kept for r in stage.process_tables(tables, decisions=decisions))
    for table in tables:
        yield table.select(columns) if columns is not None and read is None else table


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
def ray_session(address: str | None = None, num_cpus: int | None = None,
                plugins: tuple[str, ...] = ()) -> Iterator[None]:
    """Use the running Ray if any; else join `address` (or RAY_ADDRESS), else start a local one. A
    cluster gets the driver's winnow and the `plugins` modules shipped to its workers."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {"include_dashboard": False, "log_to_driver": True}
    with tempfile.TemporaryDirectory(prefix="winnow-code-") as tmp:
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:  # a cluster runs the driver's winnow, whatever its nodes have installed
            kwargs["runtime_env"] = {"py_modules": [package_snapshot(tmp), *map(module_source, plugins)]}
        ray.init(address=address, **kwargs)
        try:
            yield
        finally:
            ray.shutdown()


def module_source(name: str) -> str:
    """What Ray ships for a module: its top-level package's directory, or its .py file."""
    import importlib

    module = importlib.import_module(name.split(".")[0])
    return module.__path__[0] if hasattr(module, "__path__") else module.__file__


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


@dataclass(frozen=True)
class Step:
    """One stage of a run with where it writes and the hash of its config (and everything before it)."""

    stage: Stage
    dir: Location
    config_hash: str

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def checkpoint(self) -> bool:
        return bool(getattr(self.stage.config, "checkpoint", False))


def segments(steps: list[Step], boundaries: set[str] = frozenset()) -> list[list[Step]]:
    """Steps grouped into segments: a new one at a global stage that follows a per-shard one, after a
    checkpoint, and before any stage named in `boundaries` (a dry run's stage)."""
    out: list[list[Step]] = []
    for step in steps:
        if not out or out[-1][-1].checkpoint or step.name in boundaries or (
                step.stage.kind == "global" and out[-1][-1].stage.kind != "global"):
            out.append([step])
        else:
            out[-1].append(step)
    return out


def kept_modes(segment: list[Step]) -> list[str]:
    """Where each stage's kept rows end up: "written" (its own files), "fused" (they flowed on to the
    next stage), "unchanged" (a segment of pass-through stages: they are its input's files)."""
    if all(step.stage.passes_through for step in segment):
        return ["unchanged"] * len(segment)
    return ["fused"] * (len(segment) - 1) + ["written"]


@dataclass
class SegmentResult:
    manifests: list[StageManifest]
    skipped: bool
    shards: list[Shard]  # the segment's output, the next segment's input
    mapped: dict[str, list] = field(default_factory=dict)  # the next stage's map outputs, by shard


def run_stage(stage: Stage, shards: list[Shard], stage_dir: Location, config_hash: str,
              options: RuntimeOptions) -> tuple[StageManifest, bool]:
    """Run (or resume, or skip) one stage on its own; returns its manifest and whether it was skipped."""
    result = run_segment([Step(stage, stage_dir, config_hash)], shards, options)
    return result.manifests[0], result.skipped


def run_segment(segment: list[Step], shards: list[Shard], options: RuntimeOptions,
                next_stage: Stage | None = None, mapped: dict[str, list] | None = None) -> SegmentResult:
    """Run (or resume, or skip) one segment over every shard.

    `mapped`: the map outputs of this segment's first (global) stage computed by the segment before;
    `next_stage`: the global stage after this segment, whose map this segment computes on the way."""
    modes = kept_modes(segment)
    manifests = [read_manifest(step.dir) for step in segment]
    if all(m is not None and m.config_hash == step.config_hash and m.kept == mode
           for m, step, mode in zip(manifests, segment, modes, strict=True)):
        return SegmentResult(manifests, True, _outputs(segment, shards, modes))
    for step in segment:
        _claim_stage_dir(step.dir, step.stage, step.config_hash)
    committed = [committed_shards(step.dir, step.config_hash, written=mode == "written")
                 for step, mode in zip(segment, modes, strict=True)]
    done = set.intersection(*(set(c) for c in committed))
    todo = [s for s in shards if s.name not in done]

    pending: list[tuple[GlobalStage, dict]] = []  # the segment's global stages with their decisions
    extras: list[dict] = []
    planning = [0.0] * len(segment)  # a global stage's plan is its own time, not shared by the segment
    for i, step in enumerate(segment):
        if step.stage.kind != "global":
            break
        plan_started = time.time()
        readable = [replace(s, pending=tuple((g, d[s.name]) for g, d in pending)) for s in shards]
        decisions, extra = step.stage.plan(readable, options, mapped if not pending else None)
        pending.append((step.stage, decisions))
        extras.append(extra)
        planning[i] = time.time() - plan_started
    extras += [{}] * (len(segment) - len(extras))
    tasks_started = time.time()

    new_entries: list[list[ShardEntry]] = [[] for _ in segment]
    on_the_way: dict[str, list] = {}
    label = "+".join(step.name for step in segment)
    with _progress(options, label, len(shards), len(done)) as advance:
        if modes[-1] == "unchanged":
            new_entries = [[_unchanged_entry(s, step, options.run_id) for s in todo] for step in segment]
        else:
            for entries, refs in _run_segment_tasks(segment, shards, todo, pending, next_stage, options, advance):
                for i, entry in enumerate(entries):
                    new_entries[i].append(entry)
                if refs:
                    on_the_way[entries[0].shard] = refs
    # the segment's wall time after planning, shared among its stages by the time each spent on the shards
    busy = [sum(e.seconds for e in made) for made in new_entries]
    shares = [b / sum(busy) if sum(busy) else 1 / len(segment) for b in busy]
    manifests = []
    for i, (step, mode, extra, made, old) in enumerate(zip(segment, modes, extras, new_entries, committed,
                                                           strict=True)):
        entries = [old[name] for name in done] + made
        seconds = planning[i] + (time.time() - tasks_started) * shares[i]
        manifest = StageManifest.from_shards(step.name, step.stage.kind, step.config_hash, entries, seconds, extra,
                                             kept=mode, next_stage=segment[i + 1].name if mode == "fused" else None)
        write_manifest(step.dir, manifest)
        manifests.append(manifest)
    return SegmentResult(manifests, False, _outputs(segment, shards, modes), on_the_way)


def _outputs(segment: list[Step], shards: list[Shard], modes: list[str]) -> list[Shard]:
    if modes[-1] == "unchanged":
        return shards
    return [Shard(s.name, segment[-1].dir.join(f"{s.name}.parquet")) for s in shards]


def count_sources(table: pa.Table, counts: dict[str, int]) -> None:
    """Add the table's rows by their `source` to `counts` (for the report's per-source funnel)."""
    if "source" in table.schema.names:
        for item in pc.value_counts(table.column("source")).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]


def _unchanged_entry(shard: Shard, step: Step, run_id: str) -> ShardEntry:
    """The ledger entry of a pass-through stage for a shard it leaves as it is (only its sources are read)."""
    rows = parquet_rows(shard.source)
    sources: dict[str, int] = {}
    for table in shard_tables(shard, 65_536, columns=["source"]):
        count_sources(table, sources)
    entry = ShardEntry(shard=shard.name, input=shard.source.uri, config_hash=step.config_hash, rows_in=rows,
                       rows_out=rows, rows_rejected=0, kept_by_source=dict(sorted(sources.items())), output=None,
                       run_id=run_id, seconds=0.0)
    write_ledger_entry(step.dir, entry)
    return entry


def _claim_stage_dir(stage_dir: Location, stage: Stage, config_hash: str) -> None:
    """Outputs made under another config are invalid: clear them, then record this config."""
    marker = stage_dir.join(STAGE_CONFIG)
    if marker.exists() and json.loads(marker.read_bytes()).get("config_hash") == config_hash:
        return
    reset_stage(stage_dir)
    stage_dir.mkdir()
    marker.write_bytes_atomic(json.dumps({"stage": stage.name, "config_hash": config_hash}).encode())


# ---------------------------------------------------------------- segment tasks


@dataclass
class _Tally:
    """One stage's counts for one shard, and its rejects file."""

    rows_in: int = 0
    rows_added: int = 0
    busy: float = 0.0  # seconds inside the stage's stream, the stages before it included
    reasons: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # kept rows by source
    rejects: ShardWriter | None = None


def process_segment(segment: list[Step], shard: Shard, run_id: str, batch_size: int,
                    decisions: list[pa.Table | None], mapper=None) -> list[ShardEntry]:
    """Stream one shard through every stage of a segment; commit every stage's rejects and the last
    stage's kept output, then each stage's ledger entry. `mapper` (the next global stage's) sees the
    kept tables as they are written."""
    tallies = [_Tally() for _ in segment]
    out_loc = segment[-1].dir.join(f"{shard.name}.parquet")
    writer: ShardWriter | None = None
    try:
        tables = None  # the first stage reads the shard; each later one takes the kept tables before it
        for i, step in enumerate(segment):
            context = {"decisions": decisions[i]} if step.stage.kind == "global" else {}
            results = step.stage.process_shard(shard.source, batch_size, **context) if tables is None \
                else step.stage.process_tables(tables, **context)
            tables = _tap(step, tallies[i], shard.name, results, empty=i == len(segment) - 1)
        for table in tables:  # the last stage's kept tables (empty ones carry the output's schema)
            started = time.perf_counter()
            if writer is None:
                writer = ShardWriter(out_loc, segment[-1].stage.output_schema(table.schema))
            writer.write(table)
            if mapper is not None and table.num_rows:
                mapper.add(table)
            tallies[-1].busy += time.perf_counter() - started
        if writer is None:  # nothing came out: an (empty) output shard all the same
            writer = ShardWriter(out_loc, segment[-1].stage.output_schema(pa.schema([])))
        rejects = [t.rejects.commit() if t.rejects else None for t in tallies]
        output = writer.commit()
    except BaseException:
        for w in [writer] + [t.rejects for t in tallies]:
            if w is not None:
                w.abort()
        raise
    entries, upstream = [], 0.0
    for step, tally, rej in zip(segment, tallies, rejects, strict=True):
        last = step is segment[-1]
        seconds, upstream = max(tally.busy - upstream, 0.0), tally.busy  # this stage's own time
        rows_rejected = rej["rows"] if rej else 0
        entry = ShardEntry(
            shard=shard.name, input=shard.source.uri, config_hash=step.config_hash, rows_in=tally.rows_in,
            rows_out=output["rows"] if last else tally.rows_in + tally.rows_added - rows_rejected,
            rows_rejected=rows_rejected, rows_added=tally.rows_added,
            rejected_by_reason=dict(sorted(tally.reasons.items())), counters=dict(sorted(tally.counters.items())),
            kept_by_source=dict(sorted(tally.sources.items())),
            output=FileEntry(path=f"{shard.name}.parquet", **output) if last else None,
            rejects=FileEntry(path=f"rejects/{shard.name}.parquet", **rej) if rej else None,
            run_id=run_id, seconds=round(seconds, 3),
        )
        entry.check_counts(step.name)
        entries.append(entry)
    for step, entry in zip(segment, entries, strict=True):
        write_ledger_entry(step.dir, entry)
    return entries


def _tap(step: Step, tally: _Tally, shard: str, results: Iterator, empty: bool = False) -> Iterator[pa.Table]:
    """A stage's results as the tables it kept (empty ones only if `empty`: the next stage never sees
    a table without rows), its counts and rejects recorded on the way; an error is marked with the
    stage it came from."""
    results = iter(results)
    try:
        while True:
            started = time.perf_counter()
            result = next(results, None)
            if result is None:
                tally.busy += time.perf_counter() - started
                return
            tally.rows_in += result.rows_in
            tally.rows_added += result.rows_added
            for name, n in result.counters.items():
                tally.counters[name] = tally.counters.get(name, 0) + n
            if result.rejects.num_rows:
                if tally.rejects is None:
                    tally.rejects = ShardWriter(step.dir.join("rejects", f"{shard}.parquet"), result.rejects.schema)
                tally.rejects.write(result.rejects)
                for reason in result.rejects.column("reject_reason").to_pylist():
                    tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
            if result.kept.num_rows:
                count_sources(result.kept, tally.sources)
            tally.busy += time.perf_counter() - started
            if result.kept.num_rows or empty:
                yield result.kept
    except BaseException as err:
        if not hasattr(err, "winnow_stage"):
            err.winnow_stage = step.name
        raise


def task_resources(*stages: Stage) -> dict:
    """What one task running these stages asks Ray for (the most GPUs any of them needs, stages served by
    model actors aside), without GPUs when the cluster has none (CPU fallback)."""
    in_tasks = [stage for stage in stages if not stage.pool]  # a pool's actors hold their own GPUs
    gpus = max((stage.gpus() for stage in in_tasks), default=0)
    if gpus and not ray.cluster_resources().get("GPU"):
        logging.getLogger("winnow").warning("stage(s) %s ask for GPUs but the Ray cluster has none: running on CPU",
                                            ", ".join(s.name for s in in_tasks if s.gpus()))
        gpus = 0
    return {"num_cpus": 1, "num_gpus": gpus} if gpus else {"num_cpus": 1}


def _run_segment_tasks(segment: list[Step], shards: list[Shard], todo: list[Shard], pending: list,
                       next_stage: Stage | None, options: RuntimeOptions, advance: Callable[[int], None]):
    """One task per uncommitted shard; yields (ledger entries, the next stage's map output refs)."""
    index = {s.name: i for i, s in enumerate(shards)}
    partitions = partition_count(shards, options)
    maps = next_stage is not None and next_stage.kind == "global" and next_stage.mapper(0, partitions) is not None
    outputs = next_stage.map_outputs(partitions) + 1 if maps else 0
    stages = [step.stage for step in segment] + ([next_stage] if maps else [])
    with model_pools(stages if todo else [], options.run_id):
        segment_ref = ray.put(segment)
        next_ref = ray.put(next_stage) if maps else None
        task = ray.remote(_segment_task).options(num_returns=1 + outputs, max_retries=options.max_retries,
                                                 retry_exceptions=RETRIED, **task_resources(*stages))

        def submit(shard: Shard):
            parts = [decisions[shard.name] for _, decisions in pending]
            flat = [ref for refs in parts for ref in refs]
            refs = task.remote(segment_ref, shard, index[shard.name], options.run_id, options.batch_size,
                               [len(p) for p in parts], next_ref, partitions, *flat)
            refs = refs if isinstance(refs, list) else [refs]
            return refs[0], refs[1:]

        for _, entries, refs in _bounded("+".join(step.name for step in segment), todo, submit,
                                         options.in_flight()):
            advance(entries[0].rows_in)
            yield entries, refs


def _segment_task(segment, shard, shard_index, run_id, batch_size, sizes, next_stage, partitions, *flat):
    decisions, at = [], 0
    for n in sizes:
        decisions.append(concat(flat[at:at + n]) if n else None)
        at += n
    decisions += [None] * (len(segment) - len(decisions))
    mapper = next_stage.mapper(shard_index, partitions) if next_stage is not None else None
    entries = process_segment(segment, shard, run_id, batch_size, decisions, mapper)
    return [entries, *mapper.finish()] if mapper is not None else entries


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
    stage_name = getattr(cause, "winnow_stage", stage_name)  # the stage of a segment that raised
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
               per_shard_args: dict[str, list] | None = None, resources: dict | None = None,
               skip: set[str] = frozenset()) -> tuple[list[list], list]:
    """Run `fn(shard_index, shard, *args, *per_shard_args[shard])` per shard not in `skip` (bounded in
    flight).

    `fn` returns `outputs` tables and then a small figure; returns the table refs per shard (in
    shard order; empty for skipped shards) and the figures. A failure names the shard.
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
    for shard, figure, refs in _bounded(name, [s for s in shards if s.name not in skip], submit,
                                        options.in_flight()):
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


def map_phase(stage: GlobalStage, shards: list[Shard], options: RuntimeOptions, partitions: int,
              mapped: dict[str, list] | None = None) -> tuple[list[list], list]:
    """The stage's mapper over every shard: its outputs per shard and their figures. Shards whose map
    ran on the way (`mapped`, by shard name) are not read again."""
    mapped = mapped or {}
    with model_pools([stage] if len(mapped) < len(shards) else [], options.run_id):
        parts, figures = map_shards(stage.name, shards, _map_task, stage.map_outputs(partitions), options,
                                    ray.put(stage), options.batch_size, partitions, skip=set(mapped),
                                    resources=task_resources(stage))
    names = [s.name for s in shards]
    reused = [i for i, name in enumerate(names) if name in mapped]
    for i, figure in zip(reused, get_phase(stage.name, "map", [mapped[names[i]][-1] for i in reused]), strict=True):
        parts[i], figures[i] = mapped[names[i]][:-1], figure
    return parts, figures


def _map_task(shard_index: int, shard: Shard, stage: GlobalStage, batch_size: int, partitions: int):
    mapper = stage.mapper(shard_index, partitions)
    for table in shard_tables(shard, batch_size, stage.map_columns):
        mapper.add(table)
    return mapper.finish()


def _key_reduce_task(p: int, stage: GlobalStage, n_shards: int, *parts):
    """Decisions of one key partition routed to their shards, plus the partition's figures last."""
    keys = concat(parts)
    decisions, figures = stage.reduce(keys) if keys is not None else (DECISION_SCHEMA.empty_table(), {})
    return split_by(decisions, "_shard", n_shards) + [figures]


def key_shuffle_plan(stage: GlobalStage, shards: list[Shard], options: RuntimeOptions,
                     mapped: dict[str, list] | None = None) -> tuple[dict, dict]:
    """map_keys per shard -> partition by key -> reduce per partition -> decisions per shard."""
    partitions = partition_count(shards, options)
    parts, _ = map_phase(stage, shards, options, partitions, mapped)
    reduced, figures = exchange(stage.name, "reduce", _key_reduce_task, parts, len(shards), options,
                                ray.put(stage), len(shards))
    return {s.name: [r[i] for r in reduced] for i, s in enumerate(shards)}, sum_figures(figures)


def sum_figures(figures: list[dict]) -> dict:
    total: dict = {}
    for figure in figures:
        for key, value in (figure or {}).items():
            total[key] = total.get(key, 0) + value
    return total


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
