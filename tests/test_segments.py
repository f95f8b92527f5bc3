"""Fused segments: the same documents and rejects as writing every stage, keys computed on the way,
models loaded once per worker process."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from winnow.flows.curate import curate
from winnow.flows.demo import demo_config, write_demo_corpus
from winnow.runtime import RuntimeOptions, Shard, Step, run_segment
from winnow.runtime.shuffle import RayPlanContext
from winnow.schemas.config import StageConfig
from winnow.stages.base import DocumentStage, StageResult
from winnow.stages.exact_dedup import ExactDedup, ExactDedupConfig
from winnow.stages.heuristics import Heuristics, HeuristicsConfig
from winnow.storage.fs import resolve

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_api")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


def files(out, pattern):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob(pattern))}


def test_fused_segments_write_the_same_documents_and_rejects_as_checkpointing_every_stage(tmp_path):
    write_demo_corpus(tmp_path / "in", seed=4, docs_per_shard=120)
    config = demo_config(str(tmp_path / "in"), str(tmp_path / "fused"))
    config["runtime"]["progress"] = False
    fused = curate(config)
    every = curate({**config, "output": str(tmp_path / "every"),
                    "stages": [{**s, "checkpoint": True} for s in config["stages"]]})

    # ingest+heuristics | exact_dedup+dedup: two stages write documents, all four write rejects
    assert [c["kept"] for c in fused["stages"].values()] == ["fused", "written", "fused", "written"]
    assert [c["kept"] for c in every["stages"].values()] == ["written"] * 4
    assert set(files(tmp_path / "fused", "*/part-*.parquet")) == {
        p for p in files(tmp_path / "every", "*/part-*.parquet") if p.parts[0] in ("heuristics", "dedup")}
    # byte for byte: the final documents, every stage's rejects and every count
    assert files(tmp_path / "fused", "dedup/part-*.parquet") == files(tmp_path / "every", "dedup/part-*.parquet")
    assert files(tmp_path / "fused", "*/rejects/*.parquet") == files(tmp_path / "every", "*/rejects/*.parquet")
    for name in fused["stages"]:
        a, b = fused["stages"][name], every["stages"][name]
        assert (a["rows_in"], a["rows_out"], a["rejected_by_reason"]) == \
               (b["rows_in"], b["rows_out"], b["rejected_by_reason"]), name
    # fewer bytes written: no copy of the corpus after ingest and after exact_dedup
    assert sum(map(len, files(tmp_path / "fused", "**/*.parquet").values())) < \
           0.7 * sum(map(len, files(tmp_path / "every", "**/*.parquet").values()))


def test_keys_computed_on_the_way_are_not_read_again(tmp_path):
    write_demo_corpus(tmp_path / "in", seed=5, docs_per_shard=80)
    config = demo_config(str(tmp_path / "in"), str(tmp_path / "x"))
    from winnow.flows.curate import list_input_shards
    from winnow.schemas.config import parse_config
    from winnow.stages import build_stage

    run_config = parse_config(config)
    root, shards = list_input_shards(run_config)
    out = resolve(str(tmp_path / "out"))
    ingest = build_stage(run_config.stages[0], run_config, root.uri)
    first = [Step(ingest, out.join("ingest"), "h1"), Step(Heuristics(HeuristicsConfig()), out.join("heuristics"), "h2")]
    options = RuntimeOptions(run_id="t", progress=False)
    exact = ExactDedup(ExactDedupConfig())
    result = run_segment(first, shards, options, next_stage=exact)
    assert set(result.mapped) == {s.name for s in shards}  # every shard's hashes came back with its output

    # the plan with those keys never opens the written documents: hide them while it runs
    hidden = tmp_path / "hidden"
    shutil.move(tmp_path / "out" / "heuristics", hidden)
    os.makedirs(tmp_path / "out" / "heuristics")
    plan = exact.plan(RayPlanContext(exact, result.shards, options, result.mapped))
    shutil.rmtree(tmp_path / "out" / "heuristics")
    shutil.move(hidden, tmp_path / "out" / "heuristics")
    read_again = exact.plan(RayPlanContext(exact, result.shards, options))  # the same plan, reading the shards
    assert plan.figures == read_again.figures and plan.figures["duplicate_groups"] > 0
    for shard in result.shards:
        mine = pa.concat_tables(ray.get(plan.decisions[shard.name]))
        theirs = pa.concat_tables(ray.get(read_again.decisions[shard.name]))
        assert mine.sort_by("_row").equals(theirs.sort_by("_row"))


class CountSetupsConfig(StageConfig):
    name: Literal["count_setups"] = "count_setups"
    marker_dir: str


class CountSetups(DocumentStage):
    """Records the process of every `setup` and of every table it processes."""

    Config = CountSetupsConfig

    def setup(self):
        open(os.path.join(self.config.marker_dir, f"setup-{os.getpid()}"), "x").close()  # twice would fail
        return os.getpid()

    def apply(self, table: pa.Table) -> StageResult:
        assert self.loaded == os.getpid()
        open(os.path.join(self.config.marker_dir, f"used-{os.getpid()}"), "a").close()
        return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])


def test_setup_loads_once_per_worker_process(tmp_path):
    from winnow.schemas.documents import DOCUMENT_SCHEMA

    shards = []
    for i in range(8):
        path = tmp_path / "in" / f"part-{i:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": [f"{i}-{j}" for j in range(50)], "text": ["some text"] * 50,
                                 "source": ["t"] * 50, "url": [None] * 50, "meta": [None] * 50},
                                schema=DOCUMENT_SCHEMA), path)
        shards.append(Shard(path.stem, resolve(str(path))))
    (tmp_path / "markers").mkdir()
    stage = CountSetups(CountSetupsConfig(marker_dir=str(tmp_path / "markers")))
    result = run_segment([Step(stage, resolve(str(tmp_path / "out")), "h")], shards,
                         RuntimeOptions(run_id="t", batch_size=10, progress=False))
    assert result.manifests[0].rows_out == 400
    setups = {p.name.split("-")[1] for p in (tmp_path / "markers").glob("setup-*")}
    used = {p.name.split("-")[1] for p in (tmp_path / "markers").glob("used-*")}
    assert setups == used and len(setups) < 8  # 40 tables in 8 tasks, one setup per worker process
