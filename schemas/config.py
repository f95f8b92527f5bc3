"""Run configuration: pydantic models that reject a bad config before any work starts.

Every model forbids unknown keys and names the allowed ones (with a did-you-mean), every
threshold carries its range. This module holds the run-level models; each stage's own model lives
in its stage module and registers with the stage, and the `stages` list is a union of the
registered models discriminated by `name`, so an unknown stage lists the stages that exist.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """The run config is invalid; the message names every offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _name_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"unknown key {key!r}{hint} allowed keys: {', '.join(allowed)}")
        return data


# ---------------------------------------------------------------- input, storage, runtime


class InputConfig(StrictModel):
    uri: str = Field(description="local directory/file or s3://bucket/prefix")
    glob: str = Field("*", description="file-name pattern under uri (matched recursively)")
    format: Literal["auto", "jsonl", "parquet", "arrow", "warc"] = "auto"
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = "url"
    source: str | None = Field(None, description="value of the source column; default: the file name")
    split: str | None = Field(None, description="a Hugging Face datasets directory: the split to read (default: all)")
    dataset_config: str | None = Field(None, description="a Hub-layout datasets directory: the config (README.md "
                                                         "`configs:`) to read; default: its default config")
    new_only: bool = Field(False, description="read only files the run index has not seen (or that changed since: "
                                              "size or modification time); needs `index`")


class S3Config(StrictModel):
    """Optional S3 settings; credentials default to the standard AWS chain (env, profile, role)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    max_attempts: int = Field(10, ge=1, le=100, description="attempts per request: throttling (503 SlowDown), 5xx "
                                                            "and connection errors are retried with backoff")
    connect_timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(120.0, gt=0)


class StorageConfig(StrictModel):
    s3: S3Config = S3Config()


class IndexConfig(StrictModel):
    """The run index shared by the runs of one deployment (see `winnow.storage.index`)."""

    uri: str = Field(description="local directory or s3://bucket/prefix of the index")
    partitions: int = Field(32, ge=1, le=65536, description="key partitions of a new index (a power of two; an "
                                                            "existing index keeps its own)")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"uri": data} if isinstance(data, str) else data

    @field_validator("partitions")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"partitions must be a power of two, got {value}")
        return value


OUTPUT_FIELDS = ("run_id", "date")


class RuntimeConfig(StrictModel):
    ray_address: str | None = Field(None, description="None: a local Ray; 'auto' or ray://host:10001: a cluster")
    num_cpus: int | None = Field(None, ge=1)
    max_in_flight: int | None = Field(None, ge=1, description="shard tasks in flight; default 2 x CPUs")
    batch_size: int = Field(2048, ge=1, le=1_000_000, description="rows per record batch")
    max_retries: int = Field(3, ge=0, le=100, description="Ray retries of a shard task whose worker died or whose "
                                                       "storage calls kept failing")
    shuffle_partitions: int | None = Field(None, ge=1, le=65536, description="reducers of global stages")
    progress: bool = True


# ---------------------------------------------------------------- stages


class StageConfig(StrictModel):
    """Base of a stage's config model. A stage module defines its own subclass with
    `name: Literal["<stage>"] = "<stage>"`; defining the stage class registers it (`register_stage`),
    and the run config's `stages` list is validated against every registered model, so an unknown
    stage name lists the stages that exist.

    `source`: the stage makes documents from the run's input (it must come first, and only once)."""

    name: str
    checkpoint: bool = Field(False, description="write this stage's kept documents (to inspect or branch from); "
                                                "by default only the last stage of a segment writes them")
    source: ClassVar[bool] = False


STAGE_CONFIGS: dict[str, type[StageConfig]] = {}


def register_stage(name: str, config: type[StageConfig]) -> None:
    """Make `config` the model of stage `name` (called when a stage class is defined)."""
    default = config.model_fields["name"].default
    if default != name:
        raise TypeError(f"{config.__name__} must declare name: Literal[{name!r}] = {name!r} (has {default!r})")
    STAGE_CONFIGS[name] = config


def stage_configs() -> dict[str, type[StageConfig]]:
    """Every registered stage's config model (winnow's own stages are found by importing them)."""
    import importlib

    importlib.import_module("winnow.stages")  # defines, and so registers, the built-in stages
    return STAGE_CONFIGS


class RunConfig(StrictModel):
    input: InputConfig
    output: str = Field(description="local directory or s3://bucket/prefix for the run's outputs; may contain "
                                    "{run_id} and {date} (the scheduled day of a deployment's run, else today)")
    index: IndexConfig | None = Field(None, description="the run index that runs of one deployment share: the "
                                                        "files they processed and the dedup keys of what they kept")
    output_format: Literal["parquet", "hf"] = Field(
        "parquet", description="hf: also write the final stage's documents to OUT/hf as a directory that "
                               "datasets.load_from_disk opens"
    )
    plugins: list[str] = Field([], description="modules to import before the stages are read: the stages they "
                                               "define register themselves (Ray workers import them too)")
    stages: list[SerializeAsAny[StageConfig]] = Field(min_length=1)
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    seed: int = 0

    @field_validator("output")
    @classmethod
    def _output_fields(cls, value: str) -> str:
        import string

        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as err:
            raise ValueError(f"{value!r}: {err} (a literal brace is written {{{{ or }}}})") from None
        unknown = sorted(names - set(OUTPUT_FIELDS))
        if unknown:
            raise ValueError(f"{value!r}: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                             f"an output may contain {{run_id}} and {{date}}")
        return value

    def output_for(self, run_id: str, date: str) -> str:
        """The output with its {run_id} and {date} filled in."""
        return self.output.format(run_id=run_id, date=date)

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        import importlib

        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ValueError(f"cannot import plugin module {module!r}: {err}") from None
        return modules

    @field_validator("stages", mode="wrap")
    @classmethod
    def _stage_models(cls, value: Any, handler) -> list[StageConfig]:
        """Each entry as its stage's own model, chosen by `name` among the registered stages."""
        models = tuple(stage_configs().values())
        # a union of the registered models, built at run time from a tuple (no `|` spelling for that)
        entry = Annotated[Union[models], Field(discriminator="name")] if len(models) > 1 else models[0]  # noqa: UP007
        return handler(TypeAdapter(list[entry]).validate_python(value))

    @model_validator(mode="after")
    def _check_stage_order(self) -> RunConfig:
        names = [s.name for s in self.stages]
        sources = " or ".join(repr(n) for n, c in sorted(STAGE_CONFIGS.items()) if c.source)
        if not type(self.stages[0]).source:
            raise ValueError(f"the first stage must be {sources} (it makes documents from the input), got "
                             f"{names[0]!r}")
        late = [s.name for s in self.stages[1:] if type(s).source]
        if late:
            raise ValueError(f"{', '.join(late)} reads the run's input, so it can only be the first stage")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stage(s) listed more than once: {', '.join(repeated)}")
        if self.input.new_only and self.index is None:
            raise ValueError("input.new_only needs a run index (`index:`) to know which files earlier runs read")
        return self

    def stage_hashes(self, input_fingerprint: str = "") -> dict[str, str]:
        """Chained hash per stage: a change to a stage's config changes its hash and all after it."""
        upstream = _sha256(
            {"input": self.input.model_dump(mode="json"), "files": input_fingerprint,
             "batch_size": self.runtime.batch_size, "seed": self.seed}
        )
        hashes = {}
        for stage in self.stages:
            # where rows are written (checkpoint) and when to warn (alarm_fraction) are not what they are
            upstream = _sha256({"upstream": upstream, "stage": stage.model_dump(
                mode="json", exclude={"checkpoint", "alarm_fraction"})})
            hashes[stage.name] = upstream
        return hashes


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def parse_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config; `overrides` (e.g. {'output': ...}) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_config(data)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw config with per-run changes: a top-level mapping (`input`, `runtime`, `storage`)
    is updated key by key, other top-level keys are replaced, and `stages` maps a stage name to the
    fields to change in that stage. An override for a stage the config does not have is an error."""
    data = {**data, "stages": [dict(s) for s in data.get("stages", [])]}
    for key, value in overrides.items():
        if key == "stages":
            if not isinstance(value, dict):
                raise ConfigError("overrides.stages must map a stage name to the fields to change")
            names = [s.get("name") for s in data["stages"]]
            for name, fields in value.items():
                if name not in names:
                    raise ConfigError(f"overrides.stages: no stage {name!r} in the config (it has {', '.join(names)})")
                data["stages"][names.index(name)].update(fields)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data
