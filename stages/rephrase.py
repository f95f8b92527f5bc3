"""Rephrase: WRAP-style synthetic data (Maini et al. 2024, "Rephrasing the Web").

Each selected document is cut at sentence boundaries into chunks of at most `chunk_tokens`, every
chunk is rephrased in each of the document's styles (easy, wiki, hard, qa: WRAP's instructions
by default), and the outputs are re-joined per document and style into one synthetic row with a
new stable id `<id>~<style>`, `rephrase_of` and `rephrase_style`, and the backend and model in
`meta`. Each document's styles come in an order fixed by a seeded hash of its id.

WRAP trains on real and synthetic text 1:1 by tokens. With `mix_by: tokens` (the default) a document
takes its next style while the shard's synthetic tokens (kept so far, plus the planned ones
expected from the yield seen so far) are below `mix` x its real tokens, so a model that writes
shorter text than it reads gets more styles per document (`TokenMix`). `mix_by: rows` deals `mix` styles per
document on average. Either way the manifest counts `real_tokens` and `synthetic_tokens` (kept
synthetic rows), both with the chunking tokenizer, and the report shows the ratio achieved.

A synthetic row whose chunk failed (timeout, HTTP error, empty output, a refusal, or an output far
longer than its input) goes to the rejects with the reason and the chunk; synthetic rows count as
`rows_added`, so rows_in + rows_added = rows_out + rows_rejected holds for every shard. Shards are
committed one by one, so a resumed run generates only for shards not yet committed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from winnow.schemas.config import Fraction, StageConfig, StrictModel
from winnow.scorers.config import ACTORS_HELP
from winnow.scorers.generate import WRAP_INSTRUCTIONS, WRAP_SYSTEM, WRAP_TEMPLATE
from winnow.stages.base import DocumentStage, ShardContext, StageFileError, StageResult, require_model

REFUSAL = re.compile(r"^\W*(I'?m sorry|I am sorry|sorry,|I apologi[sz]e|I can ?not|I can'?t|I'?m unable|I am unable|"
                     r"I won'?t|As an AI)", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
SYNTHETIC_COLUMNS = [pa.field("rephrase_of", pa.string()), pa.field("rephrase_style", pa.string())]


class OpenAIConfig(StrictModel):
    """An OpenAI-compatible server (vLLM, TGI, llama.cpp, a hosted API)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="up to and including /v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (may be unset)")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight per worker")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, le=20, description="retries on 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")


class RephraseConfig(StageConfig):
    """WRAP-style rephrasing (Maini et al. 2024): synthetic rows in the chosen styles, linked by `rephrase_of`."""

    name: Literal["rephrase"] = "rephrase"
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
    num_gpus: float = Field(0, ge=0, description="GPUs each shard task or model actor asks Ray for")
    actors: int | None = Field(None, ge=0, description=ACTORS_HELP)
    openai: OpenAIConfig = OpenAIConfig()

    @model_validator(mode="after")
    def _check(self) -> RephraseConfig:
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


def render_prompt(config: RephraseConfig, style: str, text: str) -> str | list[dict]:
    """The prompt for one chunk in one style: a completion string, or chat messages when `chat`."""
    instruction = config.instructions.get(style, WRAP_INSTRUCTIONS[style])
    system = config.system_prompt if config.system_prompt is not None else WRAP_SYSTEM
    if config.chat:
        return [{"role": "system", "content": system}, {"role": "user", "content": f"{instruction}\n\n{text}"}]
    template = config.template or WRAP_TEMPLATE
    # Placeholders are replaced one by one (not str.format) so braces in a document stay as they are.
    return template.replace("{system}", system).replace("{instruction}", instruction).replace("{text}", text)


def chunk_text(text: str, max_tokens: int, count: Callable[[list[str]], list[int]]) -> list[str]:
    """Chunks of at most ~max_tokens that end at sentence (or line) boundaries; a sentence longer
    than the limit on its own is cut between words. Token counts are summed per sentence."""
    sentences = [s for line in text.splitlines() for s in SENTENCE_END.split(line.strip()) if s]
    chunks, current, used = [], [], 0
    for sentence, n in zip(sentences, count(sentences), strict=True):
        pieces = [(sentence, n)] if n <= max_tokens else _cut_words(sentence, max_tokens, count)
        for piece, k in pieces:
            if current and used + k > max_tokens:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(piece)
            used += k
    if current:
        chunks.append(" ".join(current))
    return chunks


def _cut_words(sentence: str, max_tokens: int, count) -> list[tuple[str, int]]:
    words = sentence.split()
    pieces, current, used = [], [], 0
    for word, k in zip(words, count([" " + w for w in words]), strict=True):
        if current and used + k > max_tokens:
            pieces.append((" ".join(current), used))
            current, used = [], 0
        current.append(word)
        used += k
    if current:
        pieces.append((" ".join(current), used))
    return pieces


def _unit(config: RephraseConfig, *parts) -> float:
    """A seeded hash of `parts` in [0, 1): the same choice on every re-run."""
    digest = hashlib.blake2b("\x1f".join(map(str, (config.seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def ordered_styles(config: RephraseConfig, doc_id: str) -> list[str]:
    """The configured styles in the order a document takes them."""
    return sorted(config.styles, key=lambda style: _unit(config, doc_id, style))


def styles_for(config: RephraseConfig, doc_id: str) -> list[str]:
    """`mix_by: rows`: the styles one document is rephrased in, `mix` per document on average."""
    whole = int(config.mix)
    return ordered_styles(config, doc_id)[:whole + (_unit(config, doc_id, "mix") < config.mix - whole)]


class TokenMix:
    """One shard's running real and synthetic token counts; picks styles so synthetic/real tracks `mix`.

    A planned style is expected to yield its document's tokens times the yield seen so far (synthetic
    tokens kept per source token asked for; 1 before the first batch is generated)."""

    def __init__(self, config: RephraseConfig):
        self.config = config
        self.real = self.synthetic = 0  # real tokens seen, synthetic tokens kept
        self.asked = self.pending = 0  # source tokens of generated jobs, and of planned ones

    def expected_yield(self) -> float:
        return self.synthetic / self.asked if self.asked else 1.0

    def styles(self, doc_id: str, tokens: int) -> list[str]:
        """Styles for a document of `tokens` real tokens."""
        self.real += tokens
        order, picked, per_style = ordered_styles(self.config, doc_id), 0, tokens * self.expected_yield()
        expected = self.synthetic + self.pending * self.expected_yield()
        while picked < len(order) and expected + per_style * picked < self.config.mix * self.real:
            picked += 1
        self.pending += tokens * picked
        return order[:picked]

    def generated(self, synthetic_tokens: int) -> None:
        """The planned jobs were generated; `synthetic_tokens` of them were kept."""
        self.synthetic += synthetic_tokens
        self.asked, self.pending = self.asked + self.pending, 0


def check_output(chunk: str, generation, max_ratio: float) -> tuple[str, str] | None:
    """(reason, detail) when a chunk's generation is unusable, else None."""
    if generation.error is not None:
        return f"rephrase_{generation.error}", generation.detail or generation.error
    text = (generation.text or "").strip()
    if not text:
        return "rephrase_empty", "the model returned no text"
    if REFUSAL.match(text[:100]):
        return "rephrase_refusal", f"output starts as a refusal: {text[:80]!r}"
    if len(text) > max_ratio * max(len(chunk), 100):
        return "rephrase_too_long", f"{len(text)} characters for a {len(chunk)}-character chunk (> {max_ratio:g}x)"
    return None


class Rephrase(DocumentStage):
    Config = RephraseConfig

    def __init__(self, config: RephraseConfig, run=None):
        super().__init__(config, run)
        if config.backend != "openai":  # (a served model is the server's)
            require_model(self.name, config.model, "transformer")
        if config.tokenizer and not Path(config.tokenizer).exists():
            raise StageFileError(self.name, config.tokenizer, "the tokenizer does not exist")

    @classmethod
    def describe_counters(cls, counters: dict[str, int]) -> str:
        if not counters.get("real_tokens"):
            return ""
        return f"synthetic:real tokens {counters.get('synthetic_tokens', 0) / counters['real_tokens']:.3f}"

    def gpus(self) -> float:
        return self.config.num_gpus if self.config.backend != "openai" else 0

    def configured_actors(self) -> int | None:
        return self.config.actors if self.config.backend != "openai" else 0  # a server holds the model

    def generate(self, prompts: list, params) -> list:
        """The backend's generations of `prompts` (run where the model is: see `call_models`)."""
        return self.loaded.backend.generate(prompts, params)

    def setup(self) -> _Models:
        return _Models(self.config)

    def process_tables(self, tables, shard: ShardContext = ShardContext()) -> Iterator[StageResult]:
        mix = TokenMix(self.config)
        for table, jobs in self.planned_batches(tables, mix=mix):
            yield self.apply(table, jobs, mix, shard.models)

    def planned_batches(self, tables, mix: TokenMix | None = None):
        """(table, jobs) per table of a shard, within the shard's `max_documents_per_shard` (lazily: a
        table is planned after the one before it was generated, so `mix` knows its tokens)."""
        budget = self.config.max_documents_per_shard  # documents left to rephrase in this shard
        mix = mix or TokenMix(self.config)
        for table in tables:
            jobs = self.jobs_for(table, budget, mix)
            if budget is not None:
                budget -= len({row for row, _, _ in jobs})
            yield table, jobs

    def jobs_for(self, table: pa.Table, budget: int | None = None,
                 mix: TokenMix | None = None) -> list[tuple[int, str, list[str]]]:
        """(row, style, chunks) for every synthetic row this table asks for, from at most `budget` documents."""
        cfg = self.config
        count = self.loaded.count
        mix = mix or TokenMix(cfg)
        texts = table.column("text").to_pylist()
        real = count(texts) if cfg.mix_by == "tokens" else None
        jobs, documents = [], 0
        for row, (doc_id, text) in enumerate(zip(table.column("id").to_pylist(), texts, strict=True)):
            if budget is not None and documents >= budget:
                if real is not None:
                    mix.real += real[row]  # passes through unrephrased: still real text of the mix
                continue
            styles = styles_for(cfg, doc_id) if real is None else mix.styles(doc_id, real[row])
            chunks = chunk_text(text, cfg.chunk_tokens, count) if styles else []
            if chunks:
                documents += 1
                jobs += [(row, style, chunks) for style in styles]
        return jobs

    def apply(self, table: pa.Table, jobs: list[tuple[int, str, list[str]]] | None = None,
              mix: TokenMix | None = None, models=None) -> StageResult:
        """Rephrase one table of documents (`jobs` from `jobs_for`; made here when not given), generating
        where the model is (`models`: the stage's model actors, else here)."""
        from winnow.scorers.generate import SamplingParams

        cfg = self.config
        mix = mix or TokenMix(cfg)
        jobs = self.jobs_for(table, mix=mix) if jobs is None else jobs
        prompts = [render_prompt(cfg, style, chunk) for _, style, chunks in jobs for chunk in chunks]
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.seed)
        generations = iter(self.call_models(models, "generate", prompts, params)() if prompts else [])

        originals = table.append_column(SYNTHETIC_COLUMNS[0], pa.nulls(table.num_rows, pa.string()))
        originals = originals.append_column(SYNTHETIC_COLUMNS[1], pa.nulls(table.num_rows, pa.string()))
        ok, failed, reasons, details = [], [], [], []
        for row, style, chunks in jobs:
            outputs, problem = [], None
            for k, chunk in enumerate(chunks):
                generation = next(generations)
                issue = check_output(chunk, generation, cfg.max_output_ratio)
                if issue and problem is None:
                    problem = (issue[0], f"style {style}, chunk {k + 1}/{len(chunks)}: {issue[1]}")
                outputs.append((generation.text or "").strip())
            synthetic = self._synthetic_row(originals, row, style, outputs)
            if problem is None:
                ok.append(synthetic)
            else:
                failed.append(synthetic)
                reasons.append(problem[0])
                details.append(problem[1])
        if cfg.keep_original:
            kept_originals, dropped = originals, originals.slice(0, 0)
        else:
            kept_originals, dropped = originals.slice(0, 0), originals
            reasons += ["original_not_kept"] * originals.num_rows
            details += [None] * originals.num_rows
        kept = pa.concat_tables([kept_originals, *ok])
        rejected = pa.concat_tables([*failed, dropped])
        count = self.loaded.count
        synthetic = sum(count([row.column("text")[0].as_py() for row in ok])) if ok else 0
        mix.generated(synthetic)
        counters = {"real_tokens": sum(count(table.column("text").to_pylist())) if table.num_rows else 0,
                    "synthetic_tokens": synthetic}
        return StageResult.of(self.name, table.num_rows, kept, rejected, reasons, details, rows_added=len(jobs),
                              counters=counters)

    def dry_run(self, shards, batch_size: int) -> dict:
        """What this stage would ask of its backend, without generating: documents, synthetic rows and
        prompts per style, prompt tokens (counted with the chunking tokenizer) and the new-token cap."""
        config, count = self.config, self.loaded.count
        totals = {"documents": 0, "rephrased_documents": 0, "synthetic_rows": 0, "prompts": 0, "prompt_tokens": 0,
                  "prompts_by_style": {s: 0 for s in config.styles}}
        for shard in shards:
            for table, jobs in self.planned_batches(shard.tables(batch_size, ["id", "text"])):
                prompts = [render_prompt(config, style, c) for _, style, chunks in jobs for c in chunks]
                rendered = [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts]
                totals["documents"] += table.num_rows
                totals["rephrased_documents"] += len({row for row, _, _ in jobs})
                totals["synthetic_rows"] += len(jobs)
                totals["prompts"] += len(prompts)
                totals["prompt_tokens"] += sum(count(rendered))
                for _, style, chunks in jobs:
                    totals["prompts_by_style"][style] += len(chunks)
        totals["max_new_tokens"] = totals["prompts"] * config.max_new_tokens
        styles = ", ".join(f"{s} {n:,}" for s, n in totals["prompts_by_style"].items())
        totals["description"] = (
            f"nothing generated: rephrase would rephrase {totals['rephrased_documents']:,} of {totals['documents']:,} "
            f"documents into {totals['synthetic_rows']:,} synthetic rows\n  prompts: {totals['prompts']:,} ({styles})\n"
            f"  prompt tokens: {totals['prompt_tokens']:,}; new tokens at most {totals['max_new_tokens']:,} "
            f"(max_new_tokens per prompt)")
        return totals

    def _synthetic_row(self, originals: pa.Table, row: int, style: str, outputs: list[str]) -> pa.Table:
        source = originals.slice(row, 1)
        doc_id = source.column("id")[0].as_py()
        meta = _meta(source.column("meta")[0].as_py())
        meta["rephrase"] = {"backend": self.config.backend, "model": self.config.model, "style": style,
                            "chunks": len(outputs)}
        values = {"id": f"{doc_id}~{style}", "text": "\n\n".join(outputs), "meta": json.dumps(meta),
                  "rephrase_of": doc_id, "rephrase_style": style}
        for name, value in values.items():
            i = source.schema.get_field_index(name)
            source = source.set_column(i, source.schema.field(name), pa.array([value], source.schema.field(name).type))
        return source


class _Models:
    """What a rephrase worker loads: the chunking token counter, and the backend on first use (a
    dry run counts prompts without building it)."""

    def __init__(self, config: RephraseConfig):
        from winnow.scorers.generate import load_token_counter

        self.config, self.count = config, load_token_counter(config)

    @functools.cached_property
    def backend(self):
        from winnow.scorers.generate import load_backend

        return load_backend(self.config)


def _meta(value: str | None) -> dict:
    """The original row's meta as a dict (a non-object or unparseable meta is kept under 'original')."""
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {"original": value}
    return parsed if isinstance(parsed, dict) else {"original": parsed}
