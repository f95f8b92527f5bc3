"""The Ray runtime: a worker that dies is retried; when retries run out the error names the shard."""

import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from support import run_stage
from winnow.runtime import RuntimeOptions, Shard, StageFailedError
from winnow.schemas.documents import DOCUMENT_SCHEMA
from winnow.stages.base import DocumentStage, StageResult
from winnow.stages.heuristics import HeuristicsConfig
from winnow.storage.fs import StorageError, resolve

pytestmark = pytest.mark.usefixtures("ray_local")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


class DiesOnce(DocumentStage):
    """Kills its worker process the first time it sees a shard (a real worker death, not an exception)."""

    name = "dies_once"

    def __init__(self, marker_dir, failure: type[Exception] | None = None):
        super().__init__(HeuristicsConfig(name="heuristics"))
        self.marker_dir, self.failure = marker_dir, failure

    def apply(self, table: pa.Table) -> StageResult:
        marker = os.path.join(self.marker_dir, table.column("id")[0].as_py())
        if not os.path.exists(marker):
            open(marker, "w").close()
            if self.failure:  # raise instead of dying
                raise self.failure("the store kept failing")
            os._exit(1)
        return StageResult.of(self.name, table.num_rows, table, table.slice(0, 0), [])


def shards(tmp_path, n=3):
    out = []
    for i in range(n):
        path = tmp_path / "in" / f"part-{i:05d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": [f"doc{i}"], "text": ["t"], "source": ["s"], "url": [None], "meta": [None]},
                                schema=DOCUMENT_SCHEMA), path)
        out.append(Shard(f"part-{i:05d}", resolve(str(path))))
    return out


def test_worker_death_is_retried_and_the_output_is_complete(tmp_path):
    (tmp_path / "markers").mkdir()
    stage = DiesOnce(str(tmp_path / "markers"))
    manifest, skipped = run_stage(stage, shards(tmp_path), resolve(str(tmp_path / "out")), "h",
                                  RuntimeOptions(run_id="r", max_retries=2, progress=False))
    assert not skipped and manifest.rows_in == manifest.rows_out == 3
    assert len(os.listdir(tmp_path / "markers")) == 3  # every shard's first worker died


def test_a_storage_error_is_retried_but_a_bug_is_not(tmp_path):
    (tmp_path / "markers").mkdir()
    stage = DiesOnce(str(tmp_path / "markers"), failure=StorageError)
    manifest, _ = run_stage(stage, shards(tmp_path), resolve(str(tmp_path / "out")), "h",
                            RuntimeOptions(run_id="r", max_retries=2, progress=False))
    assert manifest.rows_out == 3 and len(os.listdir(tmp_path / "markers")) == 3

    (tmp_path / "markers2").mkdir()
    with pytest.raises(StageFailedError, match="the store kept failing"):
        run_stage(DiesOnce(str(tmp_path / "markers2"), failure=ValueError), shards(tmp_path, 1),
                  resolve(str(tmp_path / "out2")), "h", RuntimeOptions(run_id="r", max_retries=2, progress=False))


def test_retries_exhausted_names_the_shard(tmp_path):
    (tmp_path / "markers").mkdir()
    stage = DiesOnce(str(tmp_path / "markers"))
    with pytest.raises(StageFailedError, match=r"stage 'dies_once' failed on shard part-0000\d .*its worker died"):
        run_stage(stage, shards(tmp_path, 1), resolve(str(tmp_path / "out")), "h",
                  RuntimeOptions(run_id="r", max_retries=0, progress=False))
