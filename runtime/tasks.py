"""What every Ray task of a run shares: the run's options, the shards tasks read, a bounded number of
tasks in flight, retries, and failures that name the stage and the shard (or phase) that failed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import ray

from winnow.stages.base import ShardContext, Stage, concat
from winnow.storage.fs import Location, StorageError
from winnow.storage.shards import iter_parquet_batches


class StageFailedError(RuntimeError):
    """A shard failed for good (after Ray's retries); names the stage, the shard and the cause."""


# Besides a dead worker, Ray retries a task that raised one of these: a store still failing after
# the storage layer's own retries. Tasks are idempotent (outputs are committed whole), so it is safe.
RETRIED = [StorageError]


@dataclass
class RuntimeOptions:
    run_id: str
    batch_size: int = 2048
    max_in_flight: int | None = None
    max_retries: int = 3
    shuffle_partitions: int | None = None
    progress: bool = True
    power_of_two_partitions: bool = False  # with a run index: a reducer's keys then fall in whole index partitions

    def in_flight(self) -> int:
        return self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


@dataclass(frozen=True)
class Shard:
    """One shard of a segment's input: its name, where it is stored, and the apply phases of global
    stages whose decisions are not written yet (run on its rows as they are read)."""

    name: str  # "part-00007"
    source: Location
    unapplied: tuple = ()  # (stage, decision refs, the plan's rule) per global stage not yet applied

    def tables(self, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The shard's rows, table by table (only `columns`); unapplied stages see whole documents."""
        read = columns if not self.unapplied else None
        tables = (pa.Table.from_batches([b]) for b in iter_parquet_batches(self.source, batch_size, columns=read))
        for stage, refs, rule in self.unapplied:
            decisions = concat(ray.get(list(refs))) if refs else None
            tables = (r.kept for r in stage.process_tables(tables, ShardContext(decisions=decisions, rule=rule)))
        for table in tables:
            yield table.select(columns) if columns is not None and read is None else table


def get_values(refs: list) -> list:
    """The values of object refs a task was handed inside a list (Ray resolves only top-level arguments)."""
    return ray.get(list(refs))


def get_phase(name: str, phase: str, refs: list) -> list:
    """`ray.get` of a phase's results; a failure becomes a StageFailedError naming stage and phase."""
    try:
        return ray.get(refs)
    except Exception as err:  # noqa: BLE001 - re-raised with the phase named
        cause = getattr(err, "cause", None) or err
        raise StageFailedError(f"stage {name!r} failed in its {phase} phase: {type(cause).__name__}: {cause}") from err


def task_resources(stages: list[Stage], pooled: set[str] = frozenset()) -> dict:
    """What one task running these stages asks Ray for: the most GPUs any of them needs (stages served
    by model actors, `pooled`, aside), without GPUs when the cluster has none (CPU fallback)."""
    in_tasks = [stage for stage in stages if stage.name not in pooled]  # a pool's actors hold their own GPUs
    gpus = max((stage.gpus() for stage in in_tasks), default=0)
    if gpus and not ray.cluster_resources().get("GPU"):
        logging.getLogger("winnow").warning("stage(s) %s ask for GPUs but the Ray cluster has none: running on CPU",
                                            ", ".join(s.name for s in in_tasks if s.gpus()))
        gpus = 0
    return {"num_cpus": 1, "num_gpus": gpus} if gpus else {"num_cpus": 1}


def bounded(stage_name: str, shards: list[Shard], submit: Callable,
            limit: int) -> Iterator[tuple[Shard, object, object]]:
    """Keep at most `limit` tasks in flight; yield (shard, small result, payload refs) as each ends.

    `submit(shard)` returns (ref of a small result, payload): only the small result is fetched
    here, so large task outputs (shuffle partitions) stay in Ray's object store.
    """
    in_flight: dict = {}
    queue = iter(shards)
    while True:
        while len(in_flight) < limit and (shard := next(queue, None)) is not None:
            ref, payload = submit(shard)
            in_flight[ref] = (shard, payload)
        if not in_flight:
            return
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        shard, payload = in_flight.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - re-raised with the shard named
            for other in in_flight:
                ray.cancel(other, force=True)
            raise StageFailedError(failure_message(stage_name, shard, err)) from err
        yield shard, result, payload


def failure_message(stage_name: str, shard: Shard, err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    stage_name = getattr(cause, "winnow_stage", stage_name)  # the stage of a segment that raised
    if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        what = f"its worker died and Ray's retries were exhausted ({type(err).__name__})"
    else:
        text = str(cause).strip()
        what = f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    return f"stage {stage_name!r} failed on shard {shard.name} ({shard.source.uri}): {what}"
