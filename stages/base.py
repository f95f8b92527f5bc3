"""What a stage is: per-shard stages map record batches to (kept, rejects); global stages add a
map -> shuffle -> reduce phase whose decisions are then applied shard by shard.

Stages work on streams of tables, so the runtime (`winnow.runtime`, which stages never import) can
chain consecutive stages inside one task per shard (a segment) without writing what passes between
them. What the runtime gives a stage comes in two small objects: a `ShardContext` for the work on one
shard (its decisions, the plan's rule, the stage's model actors) and a `PlanContext` for a global
stage's plan (the shards, and the map / exchange / gather building blocks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from winnow.schemas.config import InputConfig, StageConfig, register_stage
from winnow.schemas.documents import document_schema_for, make_rejects, validate_documents
from winnow.scorers.config import model_file_problem
from winnow.storage.fs import Location, resolve
from winnow.storage.index import IndexView
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
           counters: dict[str, int] | None = None) -> StageResult:
        return cls(rows_in, kept, make_rejects(dropped, stage, list(reasons), details), rows_added, counters or {})


@dataclass(frozen=True)
class RunContext:
    """What a stage may need of its run beyond its own config: the input it reads (a source stage),
    the run's output location (e.g. where packed tokens go), and the run index as of the run's start
    (dedup stages match against it and write their new keys beside it)."""

    input: InputConfig | None = None
    input_root: str | None = None
    output: Location | None = None
    index: IndexView | None = None


class StageFileError(ValueError):
    """A file a stage reads is missing or malformed; raised when the stage is built, before any work."""

    def __init__(self, stage: str, path: str, problem: str):
        super().__init__(f"stage {stage!r}: {path}: {problem}")


def require_file(stage: str, path: str, what: str) -> Location:
    """`path` (local or s3://) as a Location, or a StageFileError naming the stage, the file and `what` it is
    when it does not exist or is empty."""
    try:
        loc = resolve(path)
        size = loc.size() if loc.exists() else None
    except (OSError, ValueError) as err:
        raise StageFileError(stage, path, f"cannot read the {what}: {err}") from None
    if size is None:
        raise StageFileError(stage, path, f"the {what} does not exist")
    if size == 0:
        raise StageFileError(stage, path, f"the {what} is empty")
    return loc


def require_model(stage: str, path: str, kind: str) -> None:
    """A StageFileError naming the stage and the model when `path` does not look like a `kind` model
    ("fasttext" file or "transformer" directory; see `winnow.scorers.config.model_file_problem`)."""
    problem = model_file_problem(path, kind)
    if problem:
        raise StageFileError(stage, path, problem)


@dataclass(frozen=True)
class ShardContext:
    """What the runtime gives a stage for the work on one shard."""

    index: int = 0  # the shard's position in the run's input
    partitions: int = 1  # key partitions of the stage's shuffle (a global stage's mapper splits by them)
    decisions: pa.Table | None = None  # a global stage's decisions for this shard's rows
    rule: Any = None  # what the stage's plan decided for every shard (e.g. a top share's cut-off)
    models: Any = None  # the stage's pool of model actors (`submit(method, *args)`), when it has one


@dataclass(frozen=True)
class Plan:
    """What a global stage's plan decided: per shard, the object refs of its decision tables (the
    runtime concatenates them for the shard's `ShardContext.decisions`), the stage's figures for its
    manifest, and a rule every shard applies (`ShardContext.rule`)."""

    decisions: dict[str, list]
    figures: dict
    rule: Any = None


class PlanContext(Protocol):
    """The building blocks a global stage's `plan` runs on (the runtime implements them on Ray).

    A "partitioned" result is a list (one per producer task) of lists (one per consumer partition) of
    object refs: consumers receive their column as task arguments, so only what a task needs moves to
    it, and the driver never fetches the data. Task functions return their tables, then one small
    figure, which is what the building blocks return beside the refs."""

    shards: list  # the shards to plan over: `.name`, and `.tables(batch_size, columns)` inside a task
    batch_size: int
    partitions: int  # reducers of the stage's shuffle

    def put(self, value) -> Any:
        """`value` stored once and handed to every task that gets it as an argument."""

    def map(self) -> tuple[list[list], list]:
        """The stage's mapper over every shard (reusing what was mapped on the way): outputs per shard, figures."""

    def map_shards(self, phase: str, fn: Callable, outputs: int, *args,
                   per_shard_args: dict[str, list] | None = None) -> tuple[list[list], list]:
        """`fn(shard_index, shard, *args, *per_shard_args[shard.name])` per shard: outputs per shard, figures."""

    def exchange(self, phase: str, fn: Callable, inputs: list[list], outputs: int, *args) -> tuple[list[list], list]:
        """One task per input partition p: `fn(p, *args, *[producer[p] for producer in inputs])`."""

    def gather(self, phase: str, fn: Callable, calls: list[tuple]) -> list:
        """`fn(*call)` as one task per call; their results, fetched."""

    def select(self, key_refs: list, target: int) -> tuple[tuple[float, str] | None, dict]:
        """The boundary key `(negated score, id)` of the best-ranked documents whose weight reaches `target`,
        over per-shard key tables (see `winnow.runtime.selection`), and its figures."""

    def get_values(self) -> Callable[[list], list]:
        """A function tasks call to fetch refs they were handed inside a list."""


def split_by(table: pa.Table, column: str, parts: int, key: Callable | None = None) -> list[pa.Table]:
    """Rows of `table` routed to `parts` tables by `key(column values) % parts`."""
    values = table.column(column).to_numpy()
    target = (key(values) if key else values) % parts
    return [table.filter(pa.array(target == p)) for p in range(parts)]


def concat(parts) -> pa.Table | None:
    """The tables among `parts` (None for an empty part) as one, or None when there are none."""
    tables = [p for p in parts if p is not None]
    return pa.concat_tables(tables) if tables else None


def sum_figures(figures: list[dict]) -> dict:
    """Per-task figures added up key by key."""
    total: dict = {}
    for figure in figures:
        for key, value in (figure or {}).items():
            total[key] = total.get(key, 0) + value
    return total


STAGES: dict[str, type[Stage]] = {}
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
    is built the same way, `Stage(config, run)`, and checks every file it reads when it is built. The
    config picks the class that runs it (`variant`): `Quality(config)` with a `keep_top` is a
    `QualityTopShare`, a global stage, so a stage's `kind` always comes from its class.

    A stage object does not change while a run is under way: what the driver decides reaches the
    workers in a `Plan` and the `ShardContext`."""

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

    def __new__(cls, *args, **kwargs):
        config = args[0] if args else kwargs.get("config")  # (none when unpickling)
        return super().__new__(cls.variant(config) if config is not None else cls)

    def __init__(self, config, run: RunContext | None = None):
        self.config = config
        self.run = run or RunContext()

    @classmethod
    def variant(cls, config) -> type[Stage]:
        """The class that runs this config (e.g. a scored stage keeping a top share is a global stage)."""
        return cls

    @classmethod
    def commands(cls) -> list[Command]:
        """`winnow` sub-commands this stage adds (e.g. a report on what it found in a run)."""
        return []

    @classmethod
    def describe_counters(cls, counters: dict[str, int]) -> str:
        """What the run table and the report add after the stage's counters (e.g. a ratio of two)."""
        return ""

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

    # -- models in a pool of actors (winnow.runtime.actors)
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

    def call_models(self, models, method: str, *args) -> Callable[[], Any]:
        """`getattr(self, method)(*args)`, run where the models are: in one of the stage's model actors
        when `models` (`ShardContext.models`) is a pool, else here. Returns a function that waits for
        the result, so a caller can submit its next batch before waiting."""
        if models is not None:
            return models.submit(method, *args)
        result = getattr(self, method)(*args)
        return lambda: result

    def setup(self):
        """Load what the stage needs in a worker (models, tokenizers, blocklists, indexes) and return it;
        read it through `self.loaded`, which calls `setup` once per process for each stage config."""
        return None

    @property
    def loaded(self):
        """What `setup` loaded, shared by every task of this stage config in this process (stage
        objects are rebuilt from pickles for every task, so the models cannot live on them)."""
        key = (type(self).__module__, type(self).__qualname__, self.config.model_dump_json())
        if key not in _LOADED:
            _LOADED[key] = self.setup()
        return _LOADED[key]

    def process_shard(self, source: Location, batch_size: int,
                      shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        """A whole stored shard through the stage (a source stage reads its input format here)."""
        return self.process_tables(read_documents(source, batch_size, self.name), shard)

    def process_tables(self, tables: Iterable[pa.Table], shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
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

    def process_tables(self, tables: Iterable[pa.Table], shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        for table in tables:
            yield self.apply(table)

    def apply(self, table: pa.Table) -> StageResult:
        """Process one table of documents (the Python API: callable without Ray or Prefect)."""
        raise NotImplementedError


class GlobalStage(Stage):
    """A stage whose decisions need the whole corpus, computed without collecting documents.

    map_keys (per shard, on Ray) -> rows partitioned by `key` across reducers -> reduce (per
    partition) -> decisions (`_shard`, `_row`, `reason`, `detail`) routed back to their shard ->
    `process_tables(tables, ShardContext(decisions=...))` drops or annotates rows.
    """

    kind = "global"
    map_columns: list[str] = ["id", "text"]

    def plan(self, ctx: PlanContext) -> Plan:
        """Decisions for every shard and the stage's figures, computed with `ctx`'s building blocks.

        The default is one hash shuffle: map_keys -> partition by key -> reduce. Stages that need
        several rounds (e.g. connected components) chain more exchanges.
        """
        parts, _ = ctx.map()
        n = len(ctx.shards)
        reduced, figures = ctx.exchange("reduce", _reduce_partition, parts, n, ctx.put(self), n)
        return Plan({s.name: [r[i] for r in reduced] for i, s in enumerate(ctx.shards)}, sum_figures(figures))

    def map_keys(self, table: pa.Table) -> pa.Table:
        """Small per-row records (no text) with a uint64 `key` column used for partitioning."""
        raise NotImplementedError

    def reduce(self, keys: pa.Table) -> tuple[pa.Table, dict]:
        """Decisions for one partition plus stage figures (summed across partitions)."""
        raise NotImplementedError

    def apply_decisions(self, table: pa.Table, row_offset: int, decisions: pa.Table) -> StageResult:
        raise NotImplementedError

    def process_tables(self, tables: Iterable[pa.Table], shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        offset = 0
        for table in tables:
            yield self.apply_decisions(table, offset, shard.decisions)
            offset += table.num_rows

    # -- keys computed on the way: the segment before this stage feeds its output batches to a mapper
    def mapper(self, shard: ShardContext) -> Mapper | None:
        """What collects this stage's per-shard keys from batches as they stream by (None: the stage
        reads its input itself in `plan`). The default collects `map_keys` for one hash shuffle."""
        return KeyMapper(self, shard.index, shard.partitions)

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
        if not self.tables:
            return [None] * self.partitions + [0]
        return split_by(pa.concat_tables(self.tables), "key", self.partitions) + [self.rows]


DECISION_SCHEMA = pa.schema([
    pa.field("_shard", pa.int32()), pa.field("_row", pa.int64()),
    pa.field("reason", pa.string()), pa.field("detail", pa.string()),
])


def _reduce_partition(p: int, stage: GlobalStage, n_shards: int, *parts):
    """Decisions of one key partition routed to their shards, plus the partition's figures last."""
    keys = concat(parts)
    decisions, figures = stage.reduce(keys) if keys is not None else (DECISION_SCHEMA.empty_table(), {})
    return split_by(decisions, "_shard", n_shards) + [figures]


@dataclass(frozen=True)
class Command:
    """A `winnow` sub-command a stage adds: `add_arguments(parser)`, then `run(args) -> exit code`."""

    name: str
    help: str
    add_arguments: Callable
    run: Callable
