"""The demo corpus: a seeded generator of web-like documents with every kind of problem planted.

Four shards in the formats users bring (JSONL, JSONL.gz, JSONL.zst, Parquet) holding clean
articles plus exact duplicates, near duplicates, boilerplate and spam pages, very short and
very long documents, and malformed lines, so every stage has real work to do.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

TOPICS = {
    "gardening": (["tomato plants", "raised beds", "compost heaps", "garden soil", "young seedlings", "rose bushes",
                   "herb borders", "fruit trees", "potting mixes", "greenhouse benches", "mulch layers", "bulbs"],
                  ["water", "prune", "feed", "protect", "transplant", "inspect", "shade", "harvest", "divide"]),
    "cooking": (["bread dough", "tomato sauces", "roasted vegetables", "slow stews", "cast iron pans",
                 "fresh pasta", "spice blends", "soup stocks", "pastry crusts", "marinades", "grain bowls"],
                ["season", "simmer", "knead", "taste", "reduce", "fold", "whisk", "chill", "braise"]),
    "travel": (["mountain trails", "night trains", "coastal villages", "local markets", "museum passes",
                "budget hostels", "ferry routes", "walking tours", "river cruises", "old town squares"],
               ["visit", "book", "explore", "compare", "photograph", "recommend", "avoid", "plan", "reach"]),
    "software": (["database indexes", "unit tests", "build pipelines", "web servers", "memory caches",
                  "log files", "container images", "message queues", "config files", "network sockets"],
                 ["profile", "refactor", "deploy", "monitor", "benchmark", "document", "debug", "review", "tune"]),
    "history": (["medieval castles", "trade routes", "printing presses", "old harbours", "city walls",
                 "royal archives", "stone bridges", "monastery libraries", "coastal forts", "market charters"],
                ["study", "restore", "describe", "survey", "excavate", "catalogue", "map", "date", "preserve"]),
}
PEOPLE = ["author", "team", "reader", "beginner", "neighbour", "club", "expert", "guide", "owner", "family",
          "visitor", "teacher", "student", "farmer", "engineer", "editor", "council", "chef", "host", "crew"]
DETERMINERS = ["the", "our", "my", "a", "every", "one", "that", "this"]
ADVERBS = ["carefully", "slowly", "often", "rarely", "quietly", "patiently", "usually", "eagerly", "gently",
           "openly", "calmly", "boldly", "firmly", "briefly", "neatly", "proudly"]
ADJECTIVES = ["small", "heavy", "bright", "quiet", "early", "modern", "simple", "careful", "local", "costly",
              "gentle", "steady", "narrow", "famous", "humble", "sturdy", "hidden", "seasonal", "rapid", "patient",
              "curious", "ordinary", "serious", "useful", "fragile", "distant", "crowded", "vivid", "rugged", "tidy"]
CONJUNCTIONS = ["because", "when", "although", "since", "unless", "while", "before", "after", "whenever",
                "so", "until", "once"]
OUTCOMES = ["improved", "lasted", "failed", "changed", "mattered", "worked", "returned", "grew", "settled", "helped",
            "suffered", "recovered", "waited", "arrived", "struggled", "flourished"]
OPENERS = ["In practice,", "Over the years,", "For this reason,", "On most days,", "At the start,", "In our view,",
           "Later that spring,", "By contrast,", "To be fair,", "In the end,", "As a rule,", "Every so often,"]


def _sentence(rng: random.Random, topic: str) -> str:
    nouns, verbs = TOPICS[topic]
    c = rng.choice
    words = [c(DETERMINERS).capitalize(), c(PEOPLE), c(ADVERBS), c(verbs), "the", c(ADJECTIVES), c(nouns),
             c(CONJUNCTIONS), c(DETERMINERS), c(ADJECTIVES), c(PEOPLE), c(OUTCOMES)]
    if rng.random() < 0.4:
        words[0] = f"{c(OPENERS)} {words[0].lower()}"
    if rng.random() < 0.4:
        words += ["after", str(rng.randint(2, 90)), c(["days", "weeks", "months", "visits", "attempts"])]
    return " ".join(words) + c([".", ".", ".", "!", "?"])


def article(rng: random.Random) -> str:
    topic = rng.choice(sorted(TOPICS))
    paragraphs = [" ".join(_sentence(rng, topic) for _ in range(rng.randint(3, 6))) for _ in range(rng.randint(3, 7))]
    title = f"Notes on {rng.choice(TOPICS[topic][0])} ({rng.randint(1990, 2025)})"
    return title + "\n\n" + "\n\n".join(paragraphs)


FOREIGN = [
    "Le conseil municipal a approuvé le nouveau budget de la bibliothèque après un long débat public.",
    "Les habitants du quartier ont planté des arbres fruitiers le long de la rivière ce printemps.",
    "Der Gemeinderat hat den neuen Haushalt für die Stadtbibliothek nach langer Debatte genehmigt.",
    "Die Bewohner des Viertels haben im Frühling Obstbäume entlang des Flusses gepflanzt.",
    "El ayuntamiento aprobó el nuevo presupuesto de la biblioteca después de un largo debate.",
    "Los vecinos del barrio plantaron árboles frutales a lo largo del río esta primavera.",
]


def foreign(rng: random.Random) -> str:
    """A page in French, German or Spanish (for the language filter)."""
    start = 2 * rng.randrange(3)
    return " ".join(rng.choice(FOREIGN[start:start + 2]) for _ in range(rng.randint(6, 12)))


def near_duplicate(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 40)):
        words[rng.randrange(len(words))] = rng.choice(ADVERBS)
    return " ".join(words)


def boilerplate(rng: random.Random) -> str:
    menu = ["Home", "About us", "Shop", "Blog", "Contact", "Login", "Cart (0)", "Search", "FAQ", "Careers"]
    lines = rng.sample(menu, 7) + ["This site uses cookies to improve your experience.",
                                   "Read our privacy policy and terms of use.", "Copyright 2024. All rights reserved."]
    return "\n".join(lines)


def spam(rng: random.Random) -> str:
    phrase = rng.choice(["buy cheap watches online now", "best casino bonus click here", "free download full version"])
    return " ".join([phrase] * rng.randint(20, 60)) + "."


def _records(rng: random.Random, shard: int, n: int, pool: list[str]) -> list[dict]:
    records = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.08 and pool:
            text = rng.choice(pool)  # exact duplicate of an earlier article
        elif roll < 0.13 and pool:
            text = near_duplicate(rng, rng.choice(pool))
        elif roll < 0.18:
            text = boilerplate(rng)
        elif roll < 0.22:
            text = spam(rng)
        elif roll < 0.25:
            text = rng.choice(["Click here.", "Page not found", "Loading...", "Subscribe!"])
        elif roll < 0.27:
            text = foreign(rng)
        else:
            text = article(rng)
            pool.append(text)
        records.append({"text": text, "url": f"https://example-{shard}.test/{i}", "lang": "en",
                        "crawl": "demo-2026"})
    records.append({"text": article(rng) * 400, "url": f"https://example-{shard}.test/huge"})  # > 1 MB
    records.append({"text": "\n".join(article(rng) for _ in range(12)), "url": f"https://example-{shard}.test/long"})
    return records


MALFORMED_LINES = [
    b'{"text": "an unterminated record',
    b'{"url": "https://example.test/no-text"}',
    b'{"text": 42}',
    b'{"text": "   "}',
    b'["not", "an", "object"]',
    b'{"text": "caf\xe9 in Latin-1, not UTF-8"}',
    b'{"text": "a lone surrogate \\ud800 from a broken escape"}',
]


def write_demo_corpus(directory: str | Path, seed: int = 0, docs_per_shard: int = 250) -> list[Path]:
    """Write the demo shards (deterministic for a seed) and return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pool: list[str] = []
    paths = []
    for shard, name in enumerate(["crawl-000.jsonl", "crawl-001.jsonl.gz", "crawl-002.jsonl.zst",
                                  "crawl-003.parquet"]):
        records = _records(rng, shard, docs_per_shard, pool)
        path = directory / name
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(records), path)
        else:
            lines = [json.dumps(r).encode() for r in records]
            for bad in MALFORMED_LINES:
                lines.insert(rng.randrange(len(lines)), bad)
            data = b"\n".join(lines) + b"\n"
            if name.endswith(".gz"):
                data = gzip.compress(data, mtime=0)
            elif name.endswith(".zst"):
                data = zstandard.ZstdCompressor().compress(data)
            path.write_bytes(data)
        paths.append(path)
    return paths


def demo_config(input_dir: str, output_dir: str, tokenizer: str | None = None, langid: bool = False,
                generator: str | None = None) -> dict:
    """The demo chain; `langid` needs the lid.176 model, tokenize/pack need a tokenizer, rephrase a generator LM."""
    stages = [{"name": "ingest"}]
    if langid:
        stages.append({"name": "langid", "languages": ["en"]})
    stages += [{"name": "heuristics"}, {"name": "exact_dedup"}, {"name": "dedup"}]
    if generator:  # 5% of the documents get one synthetic rephrasing (wiki or qa style)
        stages.append({"name": "rephrase", "backend": "transformers", "model": generator, "styles": ["wiki", "qa"],
                       "mix": 0.05, "max_new_tokens": 48, "device": "cpu"})
    if tokenizer:
        stages += [{"name": "tokenize", "tokenizer": tokenizer},
                   {"name": "pack", "strategy": "bfd", "seq_len": 1024, "ranks": 2}]
    return {"input": {"uri": str(input_dir), "glob": "crawl-*"}, "output": str(output_dir), "stages": stages,
            "runtime": {"batch_size": 256}}


def demo_tokenizer(directory: str | Path, seed: int = 0) -> str:
    """A small byte-level BPE trained on text from the demo generator (no download)."""
    from winnow.scorers.tokenizer import train_bpe

    rng = random.Random(seed + 1)
    return str(train_bpe((article(rng) for _ in range(500)), 2000, directory))


def demo_generator(directory: str | Path, tokenizer: str, seed: int = 0) -> str:
    """A tiny randomly initialised GPT-2 standing in for an instruction-tuned model (nothing can be
    downloaded here): it exercises the rephrase stage's machinery; its text is noise."""
    from winnow.scorers.lm import make_tiny_lm

    return str(make_tiny_lm(directory, tokenizer, context=512, hidden=64, layers=2, seed=seed))
