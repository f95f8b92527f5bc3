"""Decontamination: find documents that share long word n-grams with benchmark items, and drop them or
cut the matching passages out.

Text is normalised as GPT-3's decontamination did: lower case, words are runs of letters and digits
(punctuation and whitespace separate them). A document matches an item when at least `min_matches`
of its n-grams (13 words by default, as GPT-3 and datatrove) are among the item's. The index, every
n-gram of every item as a 64-bit hash (sorted, with the item it came from), is built once when the
stage is built (on the driver) and put in Ray's object store; each worker process maps it once and
looks a document's n-grams up with a binary search. Items with fewer than n words cannot be matched
this way; they are counted (`extra` of the index) and the log says so.

`drop` rejects a document as `contaminated:<benchmark>`, the detail naming the item and the number
of matching n-grams; `redact` cuts each matching span and `redact_window` characters on either side
(GPT-3 used 200) and keeps the rest. Either way the document's `decontam_items` lists the items it
matched, which `contamination` (and `winnow decontam-report OUT`) gathers into a table of the items
found, to publish with a model.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from winnow.schemas.config import StageConfig, StrictModel
from winnow.stages.base import Command, DocumentStage, StageFileError, StageResult, require_file
from winnow.storage.fs import Location, resolve
from winnow.storage.manifest import kept_files, rejects_files

WORD = re.compile(r"[^\W_]+")
ITEMS = "decontam_items"  # the items a document matched, most matching n-grams first, comma-separated
MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: the rolling hash's base


class BenchmarkSource(StrictModel):
    """One benchmark file: llm-foundry JSONL (query/choices/gold, context/continuation, …) by default;
    `fields` names the fields holding the text of any other JSONL/Parquet (e.g. GSM8K's question and
    answer); a .txt file has one item per line."""

    path: str
    name: str | None = Field(None, description="default: the file name without its extensions")
    fields: list[str] | None = Field(None, description="fields whose text (joined by a space) is the item")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name.split(".")[0]


class DecontaminateConfig(StageConfig):
    """Drop (or redact) documents sharing word n-grams with benchmark items."""

    name: Literal["decontaminate"] = "decontaminate"
    benchmarks: list[BenchmarkSource] = Field(min_length=1)
    n: int = Field(13, ge=3, description="words per n-gram")
    min_matches: int = Field(1, ge=1, description="matching n-grams that make a document contaminated")
    mode: Literal["drop", "redact"] = "drop"
    redact_window: int = Field(200, ge=0, description="redact: characters cut on either side of a match")


def words_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(WORD.finditer(text))
    return [m.group().lower() for m in matches], [m.span() for m in matches]


def ngram_hashes(words: list[str], n: int, memo: dict[str, int]) -> np.ndarray:
    """A 64-bit hash of each run of n words (position i: words i..i+n-1); empty if fewer than n words."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    codes = []
    for word in words:
        code = memo.get(word)
        if code is None:
            code = memo[word] = zlib.crc32(word.encode()) | (len(word) << 32)
        codes.append(code)
    h = np.array(codes, dtype=np.uint64)
    out = np.zeros(len(words) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * MULTIPLIER + h[k:len(words) - n + 1 + k]
    return out


def read_items(source: BenchmarkSource) -> list[str]:
    """A benchmark file's items as text."""
    from winnow.scorers.data import benchmark_text, read_table

    if source.path.endswith(".txt"):
        return [line for line in Path(source.path).read_text().splitlines() if line.strip()]
    rows = read_table(source.path).to_dicts()
    if source.fields:
        return [" ".join(str(row[f]) for f in source.fields if row.get(f) is not None) for row in rows]
    return [benchmark_text(row) for row in rows]


@dataclass
class NgramIndex:
    """Sorted n-gram hashes, the item each came from (an index into `items`), and the items' names."""

    hashes: np.ndarray
    item_of: np.ndarray
    items: list[str]  # "<benchmark>:<row>"
    too_short: dict[str, int]

    @classmethod
    def build(cls, sources: list[BenchmarkSource], n: int, stage: str = "decontaminate") -> NgramIndex:
        """The index of every source's items; a file that is missing, empty, unreadable or holds no items
        is a StageFileError naming it."""
        memo: dict[str, int] = {}
        parts, owners, items, too_short = [], [], [], {}
        for source in sources:
            require_file(stage, source.path, "benchmark file")
            try:
                texts = read_items(source)
            except Exception as err:  # noqa: BLE001 - polars, JSON and field errors alike: one line naming the file
                first = (str(err).strip().splitlines() or [""])[0]
                raise StageFileError(stage, source.path, f"cannot read benchmark items: {type(err).__name__}: "
                                                         f"{first}") from None
            if not texts:
                raise StageFileError(stage, source.path, "the benchmark file holds no items")
            for row, text in enumerate(texts):
                hashes = ngram_hashes(words_with_offsets(text)[0], n, memo)
                if not len(hashes):
                    too_short[source.label] = too_short.get(source.label, 0) + 1
                    continue
                parts.append(hashes)
                owners.append(np.full(len(hashes), len(items), dtype=np.int32))
                items.append(f"{source.label}:{row}")
        hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int32)
        order = np.argsort(hashes, kind="stable")  # equal hashes: the first item keeps them
        hashes, owner = hashes[order], owner[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        return cls(hashes[first], owner[first], items, too_short)

    def matches(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the n-grams found in the index, and the item each belongs to."""
        if not len(hashes) or not len(self.hashes):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        at = np.searchsorted(self.hashes, hashes).clip(max=len(self.hashes) - 1)
        found = np.flatnonzero(self.hashes[at] == hashes)
        return found, self.item_of[at[found]]


class Decontaminate(DocumentStage):
    Config = DecontaminateConfig

    @classmethod
    def commands(cls) -> list[Command]:
        return [REPORT_COMMAND]

    def __init__(self, config: DecontaminateConfig, run=None):
        super().__init__(config, run)
        index = NgramIndex.build(config.benchmarks, config.n, self.name)
        if index.too_short:
            logging.getLogger("winnow").warning(
                "decontaminate: items with fewer than %d words cannot be matched and are left out: %s", config.n,
                ", ".join(f"{name} {k:,}" for name, k in sorted(index.too_short.items())))
        self.index_size = len(index.hashes)
        # built once, on the driver; the runtime stores a segment's stages once in Ray's object store,
        # where the index's arrays are shared by the tasks that read them, not copied into each one
        self.index = index

    def item_ngrams(self, item: str) -> list[tuple[str, ...]]:
        """The normalised word n-grams of one item ("<benchmark>:<row>"), to show or check a match."""
        label, row = item.rsplit(":", 1)
        source = next(s for s in self.config.benchmarks if s.label == label)
        words, n = words_with_offsets(read_items(source)[int(row)])[0], self.config.n
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]

    def apply(self, table: pa.Table) -> StageResult:
        cfg, index, memo = self.config, self.index, {}
        keep = np.ones(table.num_rows, dtype=bool)
        texts, reasons, details, counters, named = [], [], [], {}, []
        for i, text in enumerate(table.column("text").to_pylist()):
            words, spans = words_with_offsets(text)
            found, owners = index.matches(ngram_hashes(words, cfg.n, memo))
            if len(found) < cfg.min_matches:
                texts.append(text)
                named.append(None)
                continue
            items, counts = np.unique(owners, return_counts=True)
            top = items[np.argsort(-counts, kind="stable")]
            named.append(",".join(index.items[t] for t in top))
            first = index.items[top[0]]
            benchmark = first.split(":")[0]
            counters[f"contaminated:{benchmark}"] = counters.get(f"contaminated:{benchmark}", 0) + 1
            if cfg.mode == "drop":
                keep[i] = False
                others = ", ".join(index.items[t] for t in top[1:3]) + (" …" if len(top) > 3 else "")
                reasons.append(f"contaminated:{benchmark}")
                details.append(f"item {first}: {int(counts.max())} matching {cfg.n}-grams"
                               + (f"; also {others}" if others else ""))
                texts.append(text)
            else:
                cut = [(spans[p][0] - cfg.redact_window, spans[p + cfg.n - 1][1] + cfg.redact_window) for p in found]
                redacted = _cut(text, cut)
                counters["redacted_chars"] = counters.get("redacted_chars", 0) + len(text) - len(redacted)
                texts.append(redacted)
        out = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
        items_column = pa.array(named, pa.string())
        out, table = out.append_column(ITEMS, items_column), table.append_column(ITEMS, items_column)
        mask = pa.array(keep)
        return StageResult.of(self.name, table.num_rows, out.filter(mask), table.filter(pa.array(~keep)), reasons,
                              details, counters=counters)

    @classmethod
    def summary(cls, output: str, extra: dict):
        found = contamination(resolve(output))
        if not found:
            return None
        totals = per_benchmark(found)
        shown = ", ".join(f"{b} {items:,}" for b, (items, _) in totals.items())
        line = (f"benchmark items found in the corpus: {shown} ({sum(found.values()):,} documents; "
                f"`winnow decontam-report {output}` lists them)")
        return line, [("benchmark items found in the corpus", [(b, items) for b, (items, _) in totals.items()])]


def _report_arguments(parser) -> None:
    parser.add_argument("output", help="the run's output directory or s3:// URI")
    parser.add_argument("--stage", default="decontaminate", help="the decontamination stage's name")


def _report(args) -> int:
    """`winnow decontam-report OUT`: a table per benchmark, then every item found, tab-separated."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    found = contamination(resolve(args.output), args.stage)
    if not found:
        console.print(f"no benchmark item was found by stage {args.stage!r} in {args.output}")
        return 0
    table = Table(title="benchmark items found in the corpus")
    for col in ("benchmark", "items found", "documents"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, (items, docs) in per_benchmark(found).items():
        table.add_row(name, f"{items:,}", f"{docs:,}")
    console.print(table)
    print("item\tdocuments")  # tab-separated, to paste into a contamination table
    for item, docs in found.items():
        print(f"{item}\t{docs}")
    return 0


REPORT_COMMAND = Command("decontam-report", "the benchmark items a run's decontamination found", _report_arguments,
                         _report)


def contamination(out: Location, stage: str = "decontaminate") -> dict[str, int]:
    """Benchmark items found by a run's decontamination stage: item -> documents holding it (read from the
    stage's rejects, and its kept rows when it redacts)."""
    try:
        files = rejects_files(out, stage) + kept_files(out, stage)
    except FileNotFoundError:  # the run has no such stage (or it has not finished)
        return {}
    found: dict[str, int] = {}
    for loc in files:
        with loc.open_read() as f:
            pf = pq.ParquetFile(f)
            if ITEMS not in pf.schema_arrow.names:
                continue
            for value in pf.read(columns=[ITEMS]).column(ITEMS).drop_null().to_pylist():
                for item in value.split(","):
                    found[item] = found.get(item, 0) + 1
    return dict(sorted(found.items()))


def per_benchmark(found: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Items found and documents holding them, per benchmark, from `contamination`'s table."""
    totals: dict[str, tuple[int, int]] = {}
    for item, docs in found.items():
        items, holding = totals.get(item.split(":")[0], (0, 0))
        totals[item.split(":")[0]] = (items + 1, holding + docs)
    return dict(sorted(totals.items()))


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """The text without the (overlapping, possibly out-of-range) spans; the pieces joined by a newline."""
    pieces, last = [], 0
    for start, end in sorted((max(s, 0), min(e, len(text))) for s, e in spans):
        if start > last:
            pieces.append(text[last:start].strip())
        last = max(last, end)
    pieces.append(text[last:].strip())
    return "\n".join(p for p in pieces if p)
