"""`winnow eval decontam`: which forms of benchmark text the decontaminate stage finds in a crawl.

A seeded sample of benchmark items is planted into sampled corpus documents in the forms a crawl
produces them, and the stage (its n-gram index and matching, as a run builds them) is run on the
planted documents. The hosts are documents the stage does not flag as they are, so a plant is found
when the stage flags its document (by its item, or by another holding the same text: BoolQ's items
share passages).

Forms (an item of w words; found when at least `min_matches` of its n-grams survive):
- verbatim: always, when w >= n + min_matches - 1;
- recased: words upper-, lower- or title-cased, punctuation swapped and added between words: always
  (matching lower-cases and splits at anything that is not a letter or digit);
- every_kth: every k-th whitespace-separated token replaced: found only when the k - 1 tokens left
  between two changes hold n words (k - 1 >= n, or tokens of several words: 10-year-old, 3*4=12);
- short_lines: cut into lines of a few words: always (a line break separates words like a space);
- first_half / second_half: half the item's words: found when the half has n + min_matches - 1 words;
- embedded: verbatim inside a long document (20,000+ characters): as verbatim.
The flag rate is the share of the sampled corpus documents, unplanted, the stage flags.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from winnow.schemas.documents import documents_table
from winnow.stages.decontaminate import (
    ITEMS,
    BenchmarkSource,
    Decontaminate,
    DecontaminateConfig,
    read_items,
    words_with_offsets,
)
from winnow.storage.fs import resolve

FORMS = ["verbatim", "recased", "every_kth", "short_lines", "first_half", "second_half", "embedded"]
PUNCTUATION = ".,;:!?"
LONG_DOCUMENT = 20_000  # characters of the host of an `embedded` plant


def planted_form(item: str, form: str, rng: random.Random, k: int, vocabulary: list[str]) -> str:
    """The item as it appears in the crawl under `form` (embedded: verbatim; the host is long)."""
    tokens = item.split()
    if form in ("verbatim", "embedded"):
        return item
    if form == "recased":
        out = []
        for token in tokens:
            token = rng.choice([str.upper, str.lower, str.title])(token)
            token = "".join(rng.choice(PUNCTUATION) if c in PUNCTUATION else c for c in token)
            out.append(token + (rng.choice(PUNCTUATION) if rng.random() < 0.2 else ""))
        return " ".join(out)
    if form == "every_kth":
        return " ".join(rng.choice(vocabulary) if (i + 1) % k == 0 else t for i, t in enumerate(tokens))
    if form == "short_lines":
        lines, i = [], 0
        while i < len(tokens):
            size = rng.randint(3, 6)
            lines.append(" ".join(tokens[i:i + size]))
            i += size
        return "\n".join(lines)
    half = (len(tokens) + 1) // 2
    return " ".join(tokens[:half] if form == "first_half" else tokens[half:])


def _host(form: str, docs: list[str], rng: random.Random) -> str:
    if form != "embedded":
        return rng.choice(docs)
    parts, size = [], 0
    while size < LONG_DOCUMENT:
        parts.append(rng.choice(docs))
        size += len(parts[-1])
    return "\n\n".join(parts)


def plant(host: str, text: str, rng: random.Random) -> str:
    """`text` inserted as its own paragraph at a paragraph or line break of `host` (or at its end)."""
    breaks = [i for i, c in enumerate(host) if c == "\n"] or [len(host)]
    at = rng.choice(breaks)
    return f"{host[:at]}\n\n{text}\n\n{host[at:]}"


def read_corpus(uri: str, limit: int, text_field: str = "text") -> list[str]:
    """Up to `limit` texts from a corpus file or directory (.jsonl/.json/.ndjson, optionally .gz/.zst, or
    .parquet; local or S3), in file order."""
    from winnow.storage.shards import detect_format, iter_jsonl_lines, iter_parquet_batches

    root = resolve(uri)
    texts: list[str] = []
    for loc in root.list_files("*"):
        try:
            kind = detect_format(loc)
        except ValueError:
            continue
        if kind == "parquet":
            for batch in iter_parquet_batches(loc, 4096, columns=[text_field]):
                texts += [t for t in batch.column(0).to_pylist() if t]
                if len(texts) >= limit:
                    return texts[:limit]
        elif kind == "jsonl":
            for lines in iter_jsonl_lines(loc, 4096):
                texts += [t for t in (json.loads(line).get(text_field) for line in lines if line.strip()) if t]
                if len(texts) >= limit:
                    return texts[:limit]
    if not texts:
        raise ValueError(f"eval decontam: no documents with a {text_field!r} field under {uri} (.jsonl or .parquet)")
    return texts


@dataclass
class Plant:
    item: str  # "<benchmark>:<row>"
    words: int
    form: str
    found: bool


def evaluate_decontam(config: DecontaminateConfig, corpus: list[str], items: int = 200, k: int = 8,
                      seed: int = 0) -> dict:
    """Plant `items` sampled items in every form into sampled corpus documents and run the stage on them;
    recall per form, the flag rate on the corpus documents as they are, and the items missed."""
    stage = Decontaminate(config.model_copy(update={"mode": "drop"}))
    named = [(f"{s.label}:{row}", text) for s in config.benchmarks for row, text in enumerate(read_items(s))]
    rng = random.Random(seed)
    chosen = rng.sample(named, min(items, len(named)))
    unplanted = _matched_items(stage, corpus)
    hosts = [doc for i, doc in enumerate(corpus) if i not in unplanted] or corpus
    vocabulary = sorted({w for text in hosts[:500] for w in text.split() if w.isalpha()}) or ["word"]
    plants, texts = [], []
    for form in FORMS:
        for name, item in chosen:
            plants.append(Plant(name, len(words_with_offsets(item)[0]), form, False))
            texts.append(plant(_host(form, hosts, rng), planted_form(item, form, rng, k, vocabulary), rng))
    flagged = _matched_items(stage, texts)
    for i, p in enumerate(plants):
        p.found = i in flagged
    long_enough = config.n + config.min_matches - 1
    forms = {}
    for form in FORMS:
        mine = [p for p in plants if p.form == form]
        eligible = [p for p in mine if p.words >= long_enough]
        forms[form] = {"planted": len(mine), "found": sum(p.found for p in mine),
                       "recall": sum(p.found for p in mine) / len(mine) if mine else float("nan"),
                       "eligible": len(eligible),
                       "recall_eligible": (sum(p.found for p in eligible) / len(eligible)) if eligible
                       else float("nan"),
                       "missed": [p for p in mine if not p.found and p.words >= long_enough]}
    return {"items": len(chosen), "n": config.n, "min_matches": config.min_matches, "k": k,
            "short_items": sum(1 for name, item in chosen if len(words_with_offsets(item)[0]) < long_enough),
            "forms": forms, "corpus_documents": len(corpus), "flagged": len(unplanted),
            "flag_rate": len(unplanted) / len(corpus) if corpus else float("nan"),
            "flagged_examples": sorted(unplanted.items())[:5], "plants": plants}


def _matched_items(stage: Decontaminate, texts: list[str], batch: int = 512) -> dict[int, set[str]]:
    """{text index: the items the stage matched} for the texts it flags."""
    found: dict[int, set[str]] = {}
    for start in range(0, len(texts), batch):
        part = texts[start:start + batch]
        result = stage.apply(documents_table(part, [str(start + i) for i in range(len(part))]))
        for doc_id, items in zip(result.rejects.column("id").to_pylist(), result.rejects.column(ITEMS).to_pylist(),
                                 strict=True):
            found[int(doc_id)] = set((items or "").split(","))
    return found


def stage_config(config_path: str | None, benchmarks: list[str], fields: list[str] | None, n: int | None,
                 min_matches: int | None) -> DecontaminateConfig:
    """The decontaminate stage of a run config, or one over the given benchmark files; `n` and
    `min_matches` override either."""
    if config_path:
        from winnow.schemas.config import load_config

        found = [s for s in load_config(config_path).stages if s.name == "decontaminate"]
        if not found:
            raise ValueError(f"eval decontam: {config_path} has no decontaminate stage")
        config = found[0]
    elif benchmarks:
        config = DecontaminateConfig(benchmarks=[BenchmarkSource(path=p, fields=fields) for p in benchmarks])
    else:
        raise ValueError("eval decontam: give --benchmarks FILE... or --config RUN.yaml")
    update = {k: v for k, v in (("n", n), ("min_matches", min_matches)) if v is not None}
    return DecontaminateConfig.model_validate({**config.model_dump(), **update})

