"""The `curate` Prefect flow: the configured stages in order, one Prefect task per segment (the
stages that run together in one Ray task per shard: see `winnow.runtime.segments`).

Prefect gives the run its orchestration (state, retries, logs, schedules); each task drives Ray,
which does the work. With PREFECT_API_URL unset Prefect uses its ephemeral local API.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import ray
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from winnow.flows.report import write_report
from winnow.runtime import RuntimeOptions, SegmentResult, Shard, Step, ray_session, run_segment, split_into_segments
from winnow.schemas.config import RunConfig, apply_overrides, load_config, parse_config
from winnow.stages import Stage, build_stage
from winnow.storage.fs import Location, resolve
from winnow.storage.hf import DatasetLayoutError, dataset_files, part_names, write_metadata, write_part
from winnow.storage.lock import output_lock
from winnow.storage.manifest import RUN_SUMMARY
from winnow.storage.shards import detect_format


class InputError(ValueError):
    """The configured input cannot be read (nothing matches, unknown format)."""


def list_input_shards(config: RunConfig) -> tuple[Location, list[Shard]]:
    """Input files matching the glob (only known formats when format is auto), as ingest shards."""
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
    input_root, shards = list_input_shards(config)
    output = resolve(config.output, config.storage.s3)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    with output_lock(output, run_id, config.storage.s3, break_lock):
        if restart:
            for stage_cfg in config.stages:
                output.join(stage_cfg.name).delete()
        fingerprint = ";".join(f"{s.source.uri}:{s.source.size()}" for s in shards)
        hashes = config.stage_hashes(fingerprint)
        options = RuntimeOptions(
            run_id=run_id, batch_size=config.runtime.batch_size,
            max_in_flight=config.runtime.max_in_flight, max_retries=config.runtime.max_retries,
            shuffle_partitions=config.runtime.shuffle_partitions, progress=config.runtime.progress,
        )
        # The config as run, secrets masked by pydantic ("**********"): the report draws its thresholds.
        summary: dict[str, Any] = {"output": output.uri, "run_id": run_id, "stages": {},
                                   "config": config.model_dump(mode="json")}
        # Every stage is built (models' labels checked, tokenizers loaded) before the first one runs.
        steps = [Step(build_stage(c, config, input_root.uri), output.join(c.name), hashes[c.name], position=i)
                 for i, c in enumerate(config.stages)]
        # A dry run stops at the first stage that has one; what comes before it is written for it to read.
        dry = next((s.name for s in steps if type(s.stage).dry_run is not Stage.dry_run), None) if dry_run else None
        order = split_into_segments(steps, {dry} if dry else set())
        mapped = None
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
        summary["documents"] = shards[0].source.uri.rsplit("/", 1)[0] if shards else None
        output.join(RUN_SUMMARY).write_bytes_atomic(json.dumps(summary, indent=2).encode())
        try:
            summary["report"] = write_report(output).uri
        except Exception as err:  # noqa: BLE001 - the data is written; a report failure must not hide that
            get_run_logger().warning("could not write the run report: %s", err)
    return summary


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
