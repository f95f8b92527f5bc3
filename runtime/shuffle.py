"""The building blocks of global stages' plans on Ray, handed to a stage as its `PlanContext`:
map its shards, exchange partitions between tasks, gather small results, select a top share.

A "partitioned" result is a list (one per producer) of lists (one per consumer partition) of
object refs; consumers receive their column as task arguments, so only the data a task needs is
moved to it, and the driver never fetches the data itself.
"""

from __future__ import annotations

from collections.abc import Callable

import ray

from winnow.runtime.actors import model_pools
from winnow.runtime.selection import find_cutoff
from winnow.runtime.tasks import RETRIED, RuntimeOptions, Shard, bounded, get_phase, get_values, task_resources
from winnow.stages.base import GlobalStage, ShardContext


def partition_count(shards: list[Shard], options: RuntimeOptions) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = options.shuffle_partitions or max(1, min(len(shards), 2 * cpus))
    return 1 << (count.bit_length() - 1) if options.power_of_two_partitions else count


class RayPlanContext:
    """One global stage's `PlanContext`: its input shards, and building blocks that run as Ray tasks.

    `mapped`: the stage's map outputs (refs, by shard name) computed on the way by the segment before."""

    def __init__(self, stage: GlobalStage, shards: list[Shard], options: RuntimeOptions,
                 mapped: dict[str, list] | None = None):
        self.stage, self.shards, self.options = stage, shards, options
        self.mapped = mapped or {}
        self.batch_size = options.batch_size
        self.partitions = partition_count(shards, options)

    def put(self, value):
        return ray.put(value)

    def get_values(self) -> Callable[[list], list]:
        return get_values

    def map(self) -> tuple[list[list], list]:
        """The stage's mapper over every shard: its outputs per shard and their figures. Shards whose map
        ran on the way are not read again."""
        stage, mapped, shards = self.stage, self.mapped, self.shards
        with model_pools([stage] if len(mapped) < len(shards) else [], self.options.run_id) as pools:
            parts, figures = self.map_shards("map", _map_task, stage.map_outputs(self.partitions), ray.put(stage),
                                             self.batch_size, self.partitions, pools.get(stage.name),
                                             skip=set(mapped), resources=task_resources([stage], set(pools)))
        names = [s.name for s in shards]
        reused = [i for i, name in enumerate(names) if name in mapped]
        for i, figure in zip(reused, get_phase(stage.name, "map", [mapped[names[i]][-1] for i in reused]),
                             strict=True):
            parts[i], figures[i] = mapped[names[i]][:-1], figure
        return parts, figures

    def map_shards(self, phase: str, fn: Callable, outputs: int, *args, per_shard_args: dict[str, list] | None = None,
                   resources: dict | None = None, skip: set[str] = frozenset()) -> tuple[list[list], list]:
        """`fn(shard_index, shard, *args, *per_shard_args[shard])` per shard not in `skip`, bounded in flight.

        `fn` returns `outputs` tables and then a small figure; returns the table refs per shard (in
        shard order; empty for skipped shards) and the figures. A failure names the shard.
        """
        task = ray.remote(fn).options(num_returns=outputs + 1, max_retries=self.options.max_retries,
                                      retry_exceptions=RETRIED, **(resources or {}))
        index = {s.name: i for i, s in enumerate(self.shards)}

        def submit(shard: Shard):
            extra = (per_shard_args or {}).get(shard.name, [])
            refs = task.remote(index[shard.name], shard, *args, *extra)
            refs = refs if outputs else [refs]
            return refs[-1], refs[:-1]

        parts: list[list] = [[] for _ in self.shards]
        figures: list = [None] * len(self.shards)
        for shard, figure, refs in bounded(self.stage.name, [s for s in self.shards if s.name not in skip], submit,
                                           self.options.in_flight()):
            parts[index[shard.name]] = refs
            figures[index[shard.name]] = figure
        return parts, figures

    def exchange(self, phase: str, fn: Callable, inputs: list[list], outputs: int, *args) -> tuple[list[list], list]:
        """One task per input partition p: `fn(p, *args, *[producer[p] for producer in inputs])`.

        `fn` returns `outputs` tables then a small figure; returns the refs per task and the figures.
        """
        partitions = len(inputs[0]) if inputs else 0
        task = ray.remote(fn).options(num_returns=outputs + 1, max_retries=self.options.max_retries,
                                      retry_exceptions=RETRIED)
        refs = [task.remote(p, *args, *[producer[p] for producer in inputs]) for p in range(partitions)]
        figures = get_phase(self.stage.name, phase, [r[-1] for r in refs])
        return [r[:-1] for r in refs], figures

    def gather(self, phase: str, fn: Callable, calls: list[tuple]) -> list:
        """`fn(*call)` as one task per call (retried as shard tasks are); their results, fetched."""
        task = ray.remote(fn).options(max_retries=self.options.max_retries, retry_exceptions=RETRIED)
        return get_phase(self.stage.name, phase, [task.remote(*call) for call in calls])

    def select(self, key_refs: list, target: int) -> tuple[tuple[float, str] | None, dict]:
        """Exact top-share selection (`winnow.runtime.selection`), each step a task beside a shard's keys."""
        def run(fn, *args):
            return self.gather("selection", fn, [(ref, *args) for ref in key_refs])

        return find_cutoff(run, target)


def _map_task(shard_index: int, shard: Shard, stage: GlobalStage, batch_size: int, partitions: int, models):
    mapper = stage.mapper(ShardContext(index=shard_index, partitions=partitions, models=models))
    for table in shard.tables(batch_size, stage.map_columns):
        mapper.add(table)
    return mapper.finish()
