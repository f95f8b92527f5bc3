"""Model stages in a pool of Ray actors: each actor loads the stage's models once and serves batches
from every shard's task, so a GPU is not idle while tasks read, parse, filter and write, and no task
pays for loading a model (Ray ends a GPU task's worker after each task, so a model in a task is
reloaded for every shard).

A stage asks for actors through `Stage.model_actors`: by default as many as its `num_gpus` lets fit
on the cluster's GPUs, none without GPUs (each shard task then loads the models, on CPU); its
config's `actors` sets the number, GPUs or not. The runtime hands a stage's pool to its tasks in their
`ShardContext.models`; tasks send a batch's inputs to an actor and get its outputs back
(`Stage.call_models`), submitting the next batch before waiting for the last. An actor that dies is
restarted by Ray (it loads its models again) and the calls it had not answered are sent again, so the
shard tasks, their commits and resume are untouched by it.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray

from winnow.stages.base import Stage

log = logging.getLogger("winnow")
_pools = itertools.count()  # pools started in this driver: actor names stay unique while killed ones wind down


class ModelActor:
    """One stage's models, loaded when the actor starts; `call` runs one of the stage's methods on them.

    Two calls may run at once (a threaded actor), so the next batch's CPU work (tokenising) overlaps
    the current batch's forward pass; scorers that share a device serialise their forward passes."""

    def __init__(self, stage: Stage):
        self.stage = stage
        stage.loaded  # noqa: B018 - load now, not on the first batch

    def call(self, method: str, *args):
        return getattr(self.stage, method)(*args)

    def pid(self) -> int:
        return os.getpid()


@dataclass(frozen=True)
class ModelPool:
    """The actors serving one stage's models (picklable: tasks receive it)."""

    actors: tuple

    def submit(self, method: str, *args) -> Callable[[], Any]:
        """Run the stage's `method(*args)` in one of the actors; returns a function that waits for it."""
        ref = random.choice(self.actors).call.remote(method, *args)
        return lambda: ray.get(ref)


def actor_name(run_id: str, stage: Stage, pool: int, i: int) -> str:
    """The name a pool's actor is registered under (`ray.util.list_named_actors`): for operators and tests."""
    return f"winnow-{run_id}-{stage.name}-{pool}-{i}"


@contextmanager
def model_pools(stages: Sequence[Stage], run_id: str) -> Iterator[dict[str, ModelPool]]:
    """Start the model actors the stages ask for; yields {stage name: its pool}; stops them at the end."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    pools: dict[str, ModelPool] = {}
    try:
        for stage in stages:
            n = stage.model_actors(gpus)
            if not n or stage.name in pools:
                continue
            per_actor = stage.gpus() if gpus else 0
            remote = ray.remote(num_gpus=per_actor, max_restarts=-1, max_task_retries=-1,
                                max_concurrency=2)(ModelActor)
            pool = next(_pools)
            pools[stage.name] = ModelPool(tuple(remote.options(name=actor_name(run_id, stage, pool, i)).remote(stage)
                                                for i in range(n)))
            log.info("stage %s: %d model actor(s), %g GPU each", stage.name, n, per_actor)
        yield pools
    finally:
        for pool in pools.values():
            for actor in pool.actors:
                ray.kill(actor, no_restart=True)
