"""Executes stages over shards, segment by segment: one Ray task per shard, commits, manifests, resume.

A segment is a run of stages that one Ray task per shard executes together, tables flowing from
stage to stage in memory: the apply phases of one or more global stages, then the per-shard stages
after them (the first segment starts with the source stage). A segment ends before the next global
stage, after a stage with `checkpoint: true`, and at the end of the run. Only its last stage writes
the documents it kept; every stage writes its own rejects and its own ledger entries and manifest.

A global stage's plan (map -> shuffle -> reduce, see `winnow.runtime.shuffle`) runs before its
segment: only integers, hashes, ids and scores cross the shuffle, never document text. Its map phase
runs inside the segment before it where it can ("keys computed on the way"), on the documents as they
are written, so the corpus is not read again just to compute keys. A global stage that directly
follows another plans over its predecessor's input with the predecessor's decisions applied while
reading (nothing in between is written).

A segment's shard commits as a unit: every stage's rejects and the kept output are written whole,
then each stage's ledger entry; a shard counts as done only when every stage of its segment has its
entry, so a killed run resumes from the last committed shard and rewrites the same bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import ray

from winnow.runtime.actors import model_pools
from winnow.runtime.progress import progress_bar
from winnow.runtime.shuffle import RayPlanContext, partition_count
from winnow.runtime.tasks import RETRIED, RuntimeOptions, Shard, bounded, task_resources
from winnow.schemas.manifest import FileEntry, ShardEntry, StageManifest
from winnow.stages.base import GlobalStage, Plan, ShardContext, Stage, concat
from winnow.storage.fs import Location
from winnow.storage.manifest import (
    STAGE_CONFIG,
    committed_shards,
    read_manifest,
    reset_stage,
    write_ledger_entry,
    write_manifest,
)
from winnow.storage.shards import ShardWriter, parquet_rows


@dataclass(frozen=True)
class Step:
    """One stage of a run with where it writes and the hash of its config (and everything before it)."""

    stage: Stage
    dir: Location
    config_hash: str
    position: int = 0  # in the config's `stages` list (recorded, so an unfinished run's stages read in order)

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def checkpoint(self) -> bool:
        return bool(getattr(self.stage.config, "checkpoint", False))


def split_into_segments(steps: list[Step], boundaries: set[str] = frozenset()) -> list[list[Step]]:
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
        _claim_stage_dir(step)
    committed = [committed_shards(step.dir, step.config_hash, written=mode == "written")
                 for step, mode in zip(segment, modes, strict=True)]
    done = set.intersection(*(set(c) for c in committed))
    todo = [s for s in shards if s.name not in done]

    plans, planning = _plan_global_stages(segment, shards, options, mapped)
    tasks_started = time.time()
    new_entries: list[list[ShardEntry]] = [[] for _ in segment]
    on_the_way: dict[str, list] = {}
    label = "+".join(step.name for step in segment)
    with progress_bar(options.progress, label, len(shards), len(done)) as advance:
        if modes[-1] == "unchanged":
            new_entries = [[_unchanged_entry(s, step, options.run_id) for s in todo] for step in segment]
        else:
            for entries, refs in _run_segment_tasks(segment, shards, todo, plans, next_stage, options, advance):
                for i, entry in enumerate(entries):
                    new_entries[i].append(entry)
                if refs:
                    on_the_way[entries[0].shard] = refs
    manifests = _write_manifests(segment, modes, plans, planning, time.time() - tasks_started, committed, done,
                                 new_entries)
    return SegmentResult(manifests, False, _outputs(segment, shards, modes), on_the_way)


def _write_manifests(segment: list[Step], modes: list[str], plans: list[Plan], planning: list[float],
                     task_seconds: float, committed: list[dict], done: set[str],
                     new_entries: list[list[ShardEntry]]) -> list[StageManifest]:
    """Each stage's manifest: its committed and new ledger entries, its plan's figures, and its seconds: its
    plan's own, plus the segment's task time shared among its stages by the time each spent on the shards."""
    busy = [sum(e.seconds for e in made) for made in new_entries]
    shares = [b / sum(busy) if sum(busy) else 1 / len(segment) for b in busy]
    # a plan's figures, and its own seconds (the map, shuffle and reduce before the segment's tasks)
    figures = [{**plan.figures, "plan_seconds": round(planning[i], 3)} for i, plan in enumerate(plans)]
    figures += [{}] * (len(segment) - len(plans))
    manifests = []
    for i, (step, mode, made, old) in enumerate(zip(segment, modes, new_entries, committed, strict=True)):
        entries = [old[name] for name in done] + made
        manifest = StageManifest.from_shards(step.name, step.stage.kind, step.config_hash, entries,
                                             planning[i] + task_seconds * shares[i], figures[i], kept=mode,
                                             next_stage=segment[i + 1].name if mode == "fused" else None)
        write_manifest(step.dir, manifest)
        manifests.append(manifest)
    return manifests


def _plan_global_stages(segment: list[Step], shards: list[Shard], options: RuntimeOptions,
                        mapped: dict[str, list] | None) -> tuple[list[Plan], list[float]]:
    """The plans of the segment's leading global stages, each over its input with the plans before it
    applied while reading; and each plan's seconds (a plan's time is its own, not the segment's)."""
    plans: list[Plan] = []
    seconds = [0.0] * len(segment)
    for i, step in enumerate(segment):
        if step.stage.kind != "global":
            break
        started = time.time()
        readable = [replace(s, unapplied=tuple((segment[k].stage, plan.decisions[s.name], plan.rule)
                                               for k, plan in enumerate(plans))) for s in shards]
        ctx = RayPlanContext(step.stage, readable, options, mapped if not plans else None)
        plans.append(step.stage.plan(ctx))
        seconds[i] = time.time() - started
    return plans, seconds


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
    for table in shard.tables(65_536, columns=["source"]):
        count_sources(table, sources)
    entry = ShardEntry(shard=shard.name, input=shard.source.uri, config_hash=step.config_hash, rows_in=rows,
                       rows_out=rows, rows_rejected=0, kept_by_source=dict(sorted(sources.items())), output=None,
                       run_id=run_id, seconds=0.0)
    write_ledger_entry(step.dir, entry)
    return entry


def _claim_stage_dir(step: Step) -> None:
    """Outputs made under another config are invalid: clear them, then record this config."""
    marker = step.dir.join(STAGE_CONFIG)
    if marker.exists() and json.loads(marker.read_bytes()).get("config_hash") == step.config_hash:
        return
    reset_stage(step.dir)
    step.dir.mkdir()
    marker.write_bytes_atomic(json.dumps({"stage": step.name, "config_hash": step.config_hash,
                                          "position": step.position}).encode())


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
                    contexts: list[ShardContext] | None = None, mapper=None) -> list[ShardEntry]:
    """Stream one shard through every stage of a segment; commit every stage's rejects and the last
    stage's kept output, then each stage's ledger entry. `contexts`: each stage's `ShardContext`;
    `mapper` (the next global stage's) sees the kept tables as they are written."""
    contexts = contexts or [ShardContext()] * len(segment)
    tallies = [_Tally() for _ in segment]
    out_loc = segment[-1].dir.join(f"{shard.name}.parquet")
    writer: ShardWriter | None = None
    try:
        tables = None  # the first stage reads the shard; each later one takes the kept tables before it
        for i, (step, ctx) in enumerate(zip(segment, contexts, strict=True)):
            results = step.stage.process_shard(shard.source, batch_size, ctx) if tables is None \
                else step.stage.process_tables(tables, ctx)
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


def _run_segment_tasks(segment: list[Step], shards: list[Shard], todo: list[Shard], plans: list[Plan],
                       next_stage: Stage | None, options: RuntimeOptions, advance: Callable[[int], None]):
    """One task per uncommitted shard; yields (ledger entries, the next stage's map output refs)."""
    index = {s.name: i for i, s in enumerate(shards)}
    partitions = partition_count(shards, options)
    maps = isinstance(next_stage, GlobalStage) and next_stage.mapper(ShardContext(partitions=partitions)) is not None
    outputs = next_stage.map_outputs(partitions) + 1 if maps else 0
    stages = [step.stage for step in segment] + ([next_stage] if maps else [])
    with model_pools(stages if todo else [], options.run_id) as pools:
        segment_ref = ray.put(segment)
        next_ref = ray.put(next_stage) if maps else None
        task = ray.remote(_segment_task).options(num_returns=1 + outputs, max_retries=options.max_retries,
                                                 retry_exceptions=RETRIED, **task_resources(stages, set(pools)))
        rules = [plan.rule for plan in plans]

        def submit(shard: Shard):
            parts = [plan.decisions[shard.name] for plan in plans]
            flat = [ref for refs in parts for ref in refs]
            refs = task.remote(segment_ref, shard, index[shard.name], options.run_id, options.batch_size,
                               [len(p) for p in parts], rules, pools, next_ref, partitions, *flat)
            refs = refs if isinstance(refs, list) else [refs]
            return refs[0], refs[1:]

        for _, entries, refs in bounded("+".join(step.name for step in segment), todo, submit, options.in_flight()):
            advance(entries[0].rows_in)
            yield entries, refs


def _segment_task(segment, shard, shard_index, run_id, batch_size, sizes, rules, pools, next_stage, partitions,
                  *flat):
    contexts, at = [], 0
    for i, step in enumerate(segment):
        decisions, rule = None, None
        if i < len(sizes):
            decisions, rule = (concat(flat[at:at + sizes[i]]) if sizes[i] else None), rules[i]
            at += sizes[i]
        contexts.append(ShardContext(index=shard_index, partitions=partitions, decisions=decisions, rule=rule,
                                     models=pools.get(step.name)))
    mapper = None
    if next_stage is not None:
        mapper = next_stage.mapper(ShardContext(index=shard_index, partitions=partitions,
                                                models=pools.get(next_stage.name)))
    entries = process_segment(segment, shard, run_id, batch_size, contexts, mapper)
    return [entries, *mapper.finish()] if mapper is not None else entries
