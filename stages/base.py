"""What a stage is: per-shard stages map record batches to (kept, rejects); global stages add a
map -> shuffle -> reduce phase whose decisions are then applied shard by shard.

Stages work on streams of tables, so the runtime can chain consecutive stages inside one task per
shard (a segment, see `winnow.stages.runtime`) without writing what passes between them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.schemas.config import InputConfig, StageConfig, register_stage
from winnow.schemas.documents import document_schema_for, make_rejects, validate_documents
from winnow.storage.fs import Location
from winnow.storage.shards import iter_parquet_batches


@dataclass
class StageResult:
    """One processed batch: how many rows came in, which were kept, which were rejected (and why)."""

    rows_in: int
    kept: pa.Table
    rejects: pa.Table
    rows_added: int = 0  # rows a stage creates (a split document's extra parts, synthetic rows)
    counters: dict[str, int] = field(default_factory=dict)  # stage-specific counts, summed into the manifest

    @classmethod
    def of(cls, stage: str, rows_in: int, kept: pa.Table, dropped: pa.Table,
           reasons: Sequence[str], details: Sequence[str | None] | None = None, rows_added: int = 0,
           counters: dict[str, int] | None = None) -> "StageResult":
        return cls(rows_in, kept, make_rejects(dropped, stage, list(reasons), details), rows_added, counters or {})


@dataclass(frozen=True)
class RunContext:
    """What a stage may need of its run beyond its own config: the input it reads (a source stage)
    and the run's output location (e.g. where packed tokens go)."""

    input: InputConfig | None = None
    input_root: str | None = None
    output: Location | None = None


STAGES: dict[str, type["Stage"]] = {}
_LOADED: dict[tuple, object] = {}  # per process: (stage class, config) -> what its `setup` loaded


@dataclass(frozen=True)
class Plot:
    """A histogram the run report draws for a stage: one column of its kept rows (and its rejects)."""

    column: str
    title: str = ""  # default "<stage>: <column>"
    section: str = "Scores"
    kept_only: bool = False
    above: float | None = None  # only values above this (e.g. clusters of 2 or more)
    log_counts: bool = False
    integer: bool = False


class Stage:
    """Base of every stage. `kind` is "shard" (one input shard -> one output shard) or "global".

    A concrete stage sets `Config`, its config model (whose `name` is the stage's name); defining the
    class registers the stage, so the run config accepts it and `build_stage` finds it. Every stage
    is built the same way: `Stage(config, run)`."""

    name: str = ""
    kind: str = "shard"
    Config: type[StageConfig] = StageConfig
    passes_through: bool = False  # keeps every row unchanged (its work is elsewhere): no need to rewrite them

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            cls.name = cls.Config.model_fields["name"].default
            register_stage(cls.name, cls.Config)
            STAGES[cls.name] = cls

    def __init__(self, config, run: RunContext | None = None):
        self.config = config
        self.run = run or RunContext()

    # -- what the run report and the run table show (class-level: they read manifests, not stages)
    plots: tuple[Plot, ...] = ()

    @classmethod
    def report_marks(cls, config: dict, extra: dict) -> list[tuple[float, str]]:
        """Values to draw over this stage's histograms: its thresholds and a corpus-wide cut-off."""
        marks = [(float(config["threshold"]), f"threshold {config['threshold']:g}")] \
            if config.get("threshold") is not None else []
        marks += [(float(v), f"{label} {v:g}") for label, v in (config.get("thresholds") or {}).items()]
        if extra.get("cutoff") is not None:
            marks.append((float(extra["cutoff"]), f"cut-off {extra['cutoff']:.4g}"))
        return marks

    @classmethod
    def summary(cls, output: str, extra: dict) -> tuple[str, list[tuple[str, list[tuple[str, float]]]]] | None:
        """A line on what the stage made (printed after a run and in the report) and bar charts
        (title, [(label, value)]) for the report; None when there is nothing to say."""
        return None

    def dry_run(self, shards, batch_size: int) -> dict | None:
        """What the stage would do, without its expensive part (None: it has no dry run; it runs)."""
        return None

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        return document_schema_for(input_schema)

    def gpus(self) -> float:
        """GPUs one shard task or model actor asks Ray for (model-bearing stages read it from their config)."""
        return 0

    # -- models in a pool of actors (winnow.stages.actors)
    pool: tuple = ()  # the stage's model actors, while the runtime runs a pool for it

    def configured_actors(self) -> int | None:
        """The config's `actors` setting of a model-bearing stage (None: decided by GPUs)."""
        return None

    def model_actors(self, cluster_gpus: float) -> int:
        """How many model actors serve this stage: as configured; else as many as `gpus()` lets fit on
        the cluster's GPUs (two per GPU at 0.5); none without GPUs (each shard task loads the models)."""
        configured = self.configured_actors()
        if configured is not None:
            return configured
        return int(cluster_gpus // self.gpus()) if self.gpus() and cluster_gpus else 0

    def submit_to_models(self, method: str, *args) -> Callable[[], Any]:
        """`getattr(self, method)(*args)`, run where the models are: in one of the stage's model actors
        when it has a pool, else here. Returns a function that waits for the result, so a caller can
        submit its next batch before waiting."""
        if self.pool:
            import ray

            ref = random.choice(self.pool).call.remote(method, *args)
            return lambda: ray.get(ref)
        result = getattr(self, method)(*args)
        return lambda: result

    def setup(self):
        """Load what the stage needs in a worker (models, tokenizers, backends) and return it; read it
        through `self.models`, which calls `setup` once per process for each stage config."""
        return None

    @property
    def models(self):
        """What `setup` loaded, shared by every task of this stage config in this process (stage
        objects are rebuilt from pickles for every task, so the models cannot live on them)."""
        key = (type(self).__module__, type(self).__qualname__, self.config.model_dump_json())
        if key not in _LOADED:
            _LOADED[key] = self.setup()
        return _LOADED[key]

    def process_shard(self, source: Location, batch_size: int, **context) -> Iterator[StageResult]:
        """A whole stored shard through the stage (a source stage reads its input format here)."""
        return self.process_tables(read_documents(source, batch_size, self.name), **context)

    def process_tables(self, tables: Iterable[pa.Table], **context) -> Iterator[StageResult]:
        """A shard's documents, table by table, through the stage: the stream a segment chains."""
        raise NotImplementedError


def read_documents(source: Location, batch_size: int, stage: str) -> Iterator[pa.Table]:
    """A stored shard's documents, table by table, checked against the document contract."""
    for batch in iter_parquet_batches(source, batch_size):
        table = pa.Table.from_batches([batch])
        validate_documents(table, where=f"{stage} input {source.uri}")
        yield table


class DocumentStage(Stage):
    """A per-shard stage over document tables: implement `apply` on one Arrow table."""

    def process_tables(self, tables: Iterable[pa.Table], **context) -> Iterator[StageResult]:
        for table in tables:
            yield self.apply(table)

    def apply(self, table: pa.Table) -> StageResult:
        """Process one table of documents (the Python API: callable without Ray or Prefect)."""
        raise NotImplementedError


class GlobalStage(Stage):
    """A stage whose decisions need the whole corpus, computed without collecting documents.

    map_keys (per shard, on Ray) -> rows partitioned by `key` across reducers -> reduce (per
    partition) -> decisions (`_shard`, `_row`, `reason`, `detail`) routed back to their shard ->
    `process_tables(..., decisions=...)` drops or annotates rows.
    """

    kind = "global"
    map_columns: list[str] = ["id", "text"]

    def plan(self, shards, options, mapped: dict[str, list] | None = None) -> tuple[dict[str, list], dict]:
        """Decisions for every shard (Ray object refs, by shard name) and the stage's figures.

        The default is one hash shuffle: map_keys -> partition by key -> reduce. Stages that need
        several rounds (e.g. connected components) override this with the runtime's building blocks.
        `mapped`: the mapper's outputs (refs, by shard name) of shards whose map ran on the way.
        """
        from winnow.stages.runtime import key_shuffle_plan

        return key_shuffle_plan(self, shards, options, mapped)

    def map_keys(self, table: pa.Table) -> pa.Table:
        """Small per-row records (no text) with a uint64 `key` column used for partitioning."""
        raise NotImplementedError

    def reduce(self, keys: pa.Table) -> tuple[pa.Table, dict]:
        """Decisions for one partition plus stage figures (summed across partitions)."""
        raise NotImplementedError

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions: pa.Table) -> StageResult:
        raise NotImplementedError

    def process_tables(self, tables: Iterable[pa.Table], decisions: pa.Table | None = None,
                       **context) -> Iterator[StageResult]:
        offset = 0
        for table in tables:
            yield self.apply_decisions(table, offset, decisions)
            offset += table.num_rows

    # -- keys computed on the way: the segment before this stage feeds its output batches to a mapper
    def mapper(self, shard_index: int, partitions: int) -> "Mapper | None":
        """What collects this stage's per-shard keys from batches as they stream by (None: the stage
        reads its input itself in `plan`). The default collects `map_keys` for one hash shuffle."""
        return KeyMapper(self, shard_index, partitions)

    def map_outputs(self, partitions: int) -> int:
        """How many tables a mapper's `finish` returns before its figure."""
        return partitions


class Mapper:
    """Per-shard map state: `add` each table of the shard in row order, then `finish` returns the
    stage's map outputs (tables, routed by the stage's plan) and a small figure last."""

    def add(self, table: pa.Table) -> None:
        raise NotImplementedError

    def finish(self) -> list:
        raise NotImplementedError


class KeyMapper(Mapper):
    """`map_keys` of each table, with the rows' shard and row number, split into key partitions."""

    def __init__(self, stage: GlobalStage, shard_index: int, partitions: int):
        self.stage, self.shard_index, self.partitions = stage, shard_index, partitions
        self.tables: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        keys = self.stage.map_keys(table.select(self.stage.map_columns))
        n = keys.num_rows
        keys = keys.append_column("_shard", pa.array(np.full(n, self.shard_index, np.int32)))
        keys = keys.append_column("_row", pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64)))
        self.tables.append(keys)
        self.rows += n

    def finish(self) -> list:
        from winnow.stages.runtime import split_by

        if not self.tables:
            return [None] * self.partitions + [0]
        return split_by(pa.concat_tables(self.tables), "key", self.partitions) + [self.rows]


DECISION_SCHEMA = pa.schema([
    pa.field("_shard", pa.int32()), pa.field("_row", pa.int64()),
    pa.field("reason", pa.string()), pa.field("detail", pa.string()),
])
