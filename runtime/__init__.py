"""The executor: runs a run's stages over its shards on Ray. Stages never import it; it imports the
stage contract (`winnow.stages.base`) and hands stages what they need as context objects.

| module | its job |
|---|---|
| `session` | the Ray session (local, or a cluster with the driver's code shipped) |
| `tasks` | options, shards, bounded in-flight tasks, retries, failures named by stage and shard |
| `segments` | stages fused into segments, one task per shard, commits, manifests, resume |
| `shuffle` | the plan context of global stages: map, exchange, gather, exact selection |
| `selection` | exact top-share selection over shards without gathering scores |
| `actors` | model stages' pools of Ray actors |
| `progress` | the progress bar |
"""

from winnow.runtime.segments import SegmentResult, Step, run_segment, split_into_segments
from winnow.runtime.session import ray_session
from winnow.runtime.tasks import RuntimeOptions, Shard, StageFailedError

__all__ = ["RuntimeOptions", "SegmentResult", "Shard", "StageFailedError", "Step", "ray_session", "run_segment",
           "split_into_segments"]
