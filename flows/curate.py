"""The `curate` Prefect flow: the configured stages in order, one Prefect task per segment (the
stages that run together in one Ray task per shard: see `winnow.runtime.segments`).

Prefect gives the run its orchestration (state, retries, logs, schedules); each task drives Ray,
which does the work. With PREFECT_API_URL unset Prefect uses its ephemeral local API.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import ray
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from winnow.flows.report import over_removal, write_report
from winnow.runtime import RuntimeOptions, SegmentResult, Shard, Step, ray_session, run_segment, split_into_segments
from winnow.schemas.config import RunConfig, apply_overrides, load_config, parse_config
from winnow.stages import Stage, build_stage
from winnow.storage.fs import Location, resolve
from winnow.storage.hf import DatasetLayoutError, dataset_files, part_names, write_metadata, write_part
from winnow.storage.index import IndexView, RunIndex
from winnow.storage.lock import output_lock
from winnow.storage.manifest import RUN_SUMMARY
from winnow.storage.shards import detect_format


class InputError(ValueError):
    """The configured input cannot be read (nothing matches, unknown format)."""


def list_input_shards(config: RunConfig, index: IndexView | None = None) -> tuple[Location, list[Shard]]:
    """Input files matching the glob (only known formats when format is auto), as ingest shards; with
    `input.new_only`, only those the index has not seen with this size and modification time."""
    root = resolve(config.input.uri, config.storage.s3)
    try:
        files = dataset_files(root, config.input.split, config.input.dataset_config)
        if files is None:
            if config.input.split or config.input.dataset_config:
                raise InputError(f"input.split and input.dataset_config are for Hugging Face datasets directories; "
                                 f"{config.input.uri} is not one (no state.json, dataset_dict.json or README.md)")
            files = root.list_files(config.input.glob)
    except (FileNotFoundError, DatasetLayoutError) as err:
        raise InputError(str(err)) from None
    if config.input.format == "auto":
        files = [f for f in files if _known_format(f)]
    if files and config.input.new_only and index is not None:
        known = index.known_files()
        infos = root.fs.get_file_info([f.path for f in files])
        files = [f for f, info in zip(files, infos, strict=True) if known.get(f.uri) != (info.size, info.mtime_ns or 0)]
        if not files:
            return root, []
    if not files:
        raise InputError(
            f"no input files match {config.input.glob!r} under {config.input.uri} "
            "(expected .jsonl/.json/.ndjson or .warc, optionally .gz/.zst, .parquet or .arrow)"
        )
    return root, [Shard(f"part-{i:05d}", loc) for i, loc in enumerate(files)]


def _known_format(loc: Location) -> bool:
    try:
        detect_format(loc)
        return True
    except ValueError:
        return False


def write_hf_output(parts: list[Location], target: Location, batch_size: int, run_id: str) -> Location:
    """The final documents as a `datasets.load_from_disk` directory: an Arrow file per shard, each
    written by a Ray task."""
    target.delete()
    write = ray.remote(write_part)
    rows = ray.get([write.remote(part, target.join(name), batch_size)
                    for part, name in zip(parts, part_names(len(parts)), strict=True)])
    write_metadata(target, len(parts), f"winnow run {run_id}: {sum(rows)} rows")
    return target


@task(name="segment", task_run_name="{label}", cache_policy=NO_CACHE)
def segment_task(label: str, segment: list[Step], shards: list[Shard], options: RuntimeOptions,
                 next_stage: Stage | None, mapped: dict[str, list] | None) -> SegmentResult:
    """Run one segment over its shards; logs each stage's counts."""
    logger = get_run_logger()
    result = run_segment(segment, shards, options, next_stage, mapped)
    for manifest in result.manifests:
        logger.info("%s%s: %d in, %d kept, %d rejected", manifest.stage,
                    " (already complete, skipped)" if result.skipped else "", manifest.rows_in, manifest.rows_out,
                    manifest.rows_rejected)
    return result


def stage_counts(step: Step, manifest, skipped: bool) -> dict[str, Any]:
    return {
        "stage": step.name, "kind": manifest.kind, "shards": len(manifest.shards), "rows_in": manifest.rows_in,
        "rows_out": manifest.rows_out, "rows_rejected": manifest.rows_rejected, "rows_added": manifest.rows_added,
        "rejected_by_reason": manifest.rejected_by_reason, "counters": manifest.counters,
        "kept_by_source": manifest.kept_by_source,
        "seconds": manifest.seconds, "skipped": skipped, "output": step.dir.uri, "kept": manifest.kept,
        **({"extra": manifest.extra} if manifest.extra else {}),
    }


@flow(name="curate", validate_parameters=False, log_prints=True)
def curate(config: RunConfig | dict | str, ray_address: str | None = None, out: str | None = None,
           restart: bool = False, dry_run: bool = False, overrides: dict | None = None,
           break_lock: bool = False) -> dict[str, Any]:
    """Run the configured stages in order; returns {stage: counts} plus where outputs are.

    `overrides` change the config for this run (see `apply_overrides`: e.g. {"input": {"uri": ...},
    "stages": {"quality": {"threshold": 0.7}}}). One run at a time per output: a second run refuses
    while the first holds `OUT/_lock.json` (`break_lock` removes a dead run's lock). `dry_run`: run the
    stages before the first one that has a dry run (their committed shards serve the real run later),
    then report what that stage would do (e.g. what rephrasing would ask of its backend) instead. The
    run ends by writing `OUT/report.html`.
    """
    config = _resolve_config(config, out, overrides)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"
    output = resolve(config.output_for(run_id, _run_date()), config.storage.s3)
    index = RunIndex(config.index.uri, config.storage.s3, config.index.partitions) if config.index else None
    if index is None:
        input_root, shards = list_input_shards(config)
    with output_lock(output, run_id, config.storage.s3, break_lock), \
            (index.lock(run_id, break_lock) if index else contextlib.nullcontext()):
        if restart:
            for stage_cfg in config.stages:
                output.join(stage_cfg.name).delete()
        view, committed = None, False
        if index is not None:
            view, committed, input_root, shards = _index_base(index, config, output)
        hashes = config.stage_hashes(_fingerprint(shards, view))
        # The config as run, secrets masked by pydantic ("**********"): the report draws its thresholds.
        summary: dict[str, Any] = {"output": output.uri, "run_id": run_id, "stages": {},
                                   "config": config.model_dump(mode="json")}
        if view is not None:
            summary["index"] = {"uri": index.root.uri, "base": view.base, "files": len(shards)}
            if not shards:
                get_run_logger().info("no new input under %s since index generation %d: nothing to do",
                                      config.input.uri, view.base)
                return {**summary, "index": {**summary["index"], "appended": None}}
        options = RuntimeOptions(
            run_id=run_id, batch_size=config.runtime.batch_size,
            max_in_flight=config.runtime.max_in_flight, max_retries=config.runtime.max_retries,
            shuffle_partitions=config.runtime.shuffle_partitions, progress=config.runtime.progress,
            power_of_two_partitions=index is not None,
        )
        # Every stage is built (models' labels checked, tokenizers loaded) before the first one runs.
        steps = [Step(build_stage(c, config, input_root.uri, output, view), output.join(c.name), hashes[c.name],
                      position=i) for i, c in enumerate(config.stages)]
        # A dry run stops at the first stage that has one; what comes before it is written for it to read.
        dry = next((s.name for s in steps if type(s.stage).dry_run is not Stage.dry_run), None) if dry_run else None
        order = split_into_segments(steps, {dry} if dry else set())
        mapped, inputs = None, [s.source for s in shards]
        with ray_session(ray_address or config.runtime.ray_address, config.runtime.num_cpus, tuple(config.plugins)):
            for k, segment in enumerate(order):
                if segment[0].name == dry:
                    summary["dry_run"] = {"stage": dry, **segment[0].stage.dry_run(shards, config.runtime.batch_size)}
                    return summary
                next_stage = order[k + 1][0].stage if k + 1 < len(order) else None
                result = segment_task("+".join(s.name for s in segment), segment, shards, options, next_stage, mapped)
                for step, manifest in zip(segment, result.manifests, strict=True):
                    summary["stages"][step.name] = stage_counts(step, manifest, result.skipped)
                shards, mapped = result.shards, result.mapped
            if config.output_format == "hf":
                summary["hf_dataset"] = write_hf_output([s.source for s in shards], output.join("hf"),
                                                         config.runtime.batch_size, run_id).uri
        if view is not None:
            summary["index"]["appended"] = view.generation if committed else append_to_index(
                index, view, run_id, output, hashes, inputs, summary["stages"])
        summary["alarms"] = over_removal(output, summary["stages"], {s.name: s.model_dump() for s in config.stages})
        for alarm in summary["alarms"]:
            get_run_logger().warning("%s removed more than %.0f%% of source(s) %s", alarm["stage"],
                                     100 * alarm["alarm_fraction"], ", ".join(s["source"] for s in alarm["sources"]))
        summary["documents"] = shards[0].source.uri.rsplit("/", 1)[0] if shards else None
        output.join(RUN_SUMMARY).write_bytes_atomic(json.dumps(summary, indent=2).encode())
        try:
            summary["report"] = write_report(output).uri
        except Exception as err:  # noqa: BLE001 - the data is written; a report failure must not hide that
            get_run_logger().warning("could not write the run report: %s", err)
    return summary


def _run_date() -> str:
    """The day a run is for: its scheduled start in a Prefect deployment, else today (UTC)."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return scheduled.strftime("%Y-%m-%d") if scheduled else time.strftime("%Y-%m-%d", time.gmtime())


def _fingerprint(shards: list[Shard], view: IndexView | None) -> str:
    """What the run's input is: its files (and sizes), and the index generation its dedup stages match against."""
    files = ";".join(f"{s.source.uri}:{s.source.size()}" for s in shards)
    return files if view is None else f"{files};index {view.root.uri} at generation {view.base}"


def _index_base(index: RunIndex, config: RunConfig, output: Location):
    """The index generation a run reads, whether this run's work is already in the index, its input root and
    shards. A rerun of a run that committed (killed after its commit) reads the generation that run read, so
    it decides and resumes as that run did and does not append again."""
    view = index.view()
    prior = next((r for r in view.records if r["kind"] == "append" and r.get("output") == output.uri), None)
    if prior is not None:
        then = index.view(prior["base"])
        root, shards = list_input_shards(config, then)
        if config.stage_hashes(_fingerprint(shards, then)) == prior["stage_hashes"]:
            return then, True, root, shards
    root, shards = list_input_shards(config, view)
    return view, False, root, shards


def append_to_index(index: RunIndex, view: IndexView, run_id: str, output: Location, hashes: dict[str, str],
                    inputs: list[Location], stages: dict[str, dict]) -> int:
    """Commit this run's generation: the files it read and the index parts its stages wrote (listed in
    their manifests), made visible by one record created only if absent."""
    generation = view.generation
    namespaces = {}
    for counts in stages.values():
        part = (counts.get("extra") or {}).get("index")
        if part:
            namespaces[part["namespace"]] = {k: part[k] for k in ("keyspace", "keys", "docs")}
    record = {"kind": "append", "generation": generation, "base": view.base, "run_id": run_id,
              "output": output.uri, "stage_hashes": hashes, "runs": {str(generation): run_id},
              "files": [index.write_files(generation, run_id, inputs)], "namespaces": namespaces}
    return index.commit(record)


def _resolve_config(config: RunConfig | dict | str | Path, out: str | None, overrides: dict | None) -> RunConfig:
    if isinstance(config, str | Path):
        config = load_config(config)
    if overrides:
        data = config.model_dump(mode="python") if isinstance(config, RunConfig) else config
        config = apply_overrides(data, overrides)
    if not isinstance(config, RunConfig):
        config = parse_config(config)
    if out:
        config = config.model_copy(update={"output": out})
    return config
