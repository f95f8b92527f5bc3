"""Benchmark text: the shared C4 samples where `../shared` exists, else (a bare GPU machine, which gets
only the repository) text generated to the same lengths, so throughput figures still mean tokens of
web-length documents. Imports nothing beyond the standard library."""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
C4 = [SHARED / "web" / "c4_train_first1k" / "c4_sample.jsonl",
      SHARED / "web" / "olmo_c4_sample_1k" / "c4-sample.00000-of-00001.json.gz"]
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there one all we their been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way well "
         "down should because each just those people how too little state good very make world still own see men work "
         "long get here between both life being under never day same another know while last might us great old year "
         "off come since against go came right used take three garden river market council music science "
         "history").split()


def c4_texts() -> list[str]:
    """About 2,000 web documents: real C4 text, or generated text of the same length distribution."""
    if all(path.exists() for path in C4):
        texts = []
        for path in C4:
            with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
                texts += [json.loads(line)["text"] for line in f]
        return texts
    return generated_texts(2000)


def generated_texts(n: int) -> list[str]:
    """n documents of random common words at C4-like lengths (where `../shared` is not there)."""
    print(f"note: {SHARED} not found; generated text of C4-like lengths stands in for C4", file=sys.stderr)
    rng = random.Random(0)
    texts = []
    for _ in range(n):
        words = int(min(rng.lognormvariate(6.0, 0.8), 8000))
        sentences = []
        while words > 0:
            n = min(words, rng.randint(6, 24))
            sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
            words -= n
        texts.append(" ".join(sentences))
    return texts


WEB = SHARED / "web"
WEB_FILES = [  # (file, text field): every web sample in the shared data
    (WEB / "c4_train_first1k" / "c4_sample.jsonl", "text"),
    (WEB / "olmo_c4_sample_1k" / "c4-sample.00000-of-00001.json.gz", "text"),
    (WEB / "dolma_test_fixtures" / "formats__gz__CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz", "text"),
    (WEB / "dolma_test_fixtures" / "multiple_files__cc_en_head-0091.jsonl.gz", "text"),
    (WEB / "dolma_test_fixtures" / "multiple_files__cc_en_head-0174.jsonl.gz", "text"),
    (WEB / "dolma_test_fixtures" / "provided__documents__000.json.gz", "text"),
    (WEB / "dsir_toy_pile_1k" / "toy_pile_data.jsonl", "contents"),
    (WEB / "olmo_paloma_fixtures" / "4chan_val_00000000.jsonl.gz", "text"),
    (WEB / "olmo_paloma_fixtures" / "c4_100_domains_5_www.theguardian.com_00000000.jsonl.gz", "text"),
]
WORD_SHAPE = re.compile(r"([^\w]*)([^\W\d_]+)([^\w]*)")  # punctuation, letters, punctuation
KEEP_WORDS = 100  # the most frequent words stay themselves in rewrites (function words)
BAND = 64  # other words are swapped with a word within this many frequency ranks


def unique_web_texts() -> list[str]:
    """Every distinct non-empty document of the shared web samples (C4, Common Crawl via Dolma's fixtures,
    the Pile, Paloma's 4chan and Guardian pages): about 4,100 real documents, none repeated."""
    missing = [str(path) for path, _ in WEB_FILES if not path.exists()]
    if missing:
        sys.exit(f"needs the shared web samples: {', '.join(missing)} not found")
    texts: dict[str, None] = {}
    for path, field in WEB_FILES:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
            texts.update((t, None) for line in f if (t := json.loads(line).get(field)) and t.strip())
    return list(texts)


class Rewriter:
    """Rewrites of real documents that share no run of words with them or with each other, for benchmarks
    that need more documents than the shared data holds, without repeating any.

    Rewrite k of a document applies its own random substitution to the document's words: each word (the
    letters of a whitespace chunk, its case and attached punctuation kept) becomes a word within `BAND`
    frequency ranks of it in the real corpus, the same one at every occurrence, so the document keeps its
    lines, punctuation, lengths and its repeated lines and n-grams (what the repetition rules measure) while
    its word sequence is new. The `KEEP_WORDS` most frequent words (the, of, and...) stay themselves, as they
    would in any new document; chunks seen once in the whole real corpus (rare words, numbers, URLs) get a
    per-rewrite tag, so a rewrite brings new rare chunks as a crawl does and a per-chunk cache cannot learn
    them from earlier copies."""

    def __init__(self, texts: list[str]):
        from collections import Counter

        chunks = Counter(chunk for text in texts for chunk in text.split())
        self.once = {chunk for chunk, n in chunks.items() if n == 1}
        words = Counter()
        for chunk, n in chunks.items():
            if match := WORD_SHAPE.fullmatch(chunk):
                words[match[2].lower()] += n
        self.ranked = [w for w, _ in words.most_common()]
        self.rank = {w: r for r, w in enumerate(self.ranked)}

    def rewrite(self, text: str, k: int, seed: int = 0) -> str:
        """Rewrite `k` (1, 2, ...) of `text`; `seed` tells documents of the same round apart."""
        rng = random.Random(k * 1_000_003 + seed)
        mapping: dict[str, str] = {}
        tag = _letters(k)

        def word(lower: str) -> str:
            if lower not in mapping:
                r = self.rank[lower]
                if r < KEEP_WORDS:
                    mapping[lower] = lower
                else:
                    lo = max(KEEP_WORDS, r - BAND // 2)
                    mapping[lower] = self.ranked[rng.randrange(lo, min(len(self.ranked), lo + BAND))]
            return mapping[lower]

        pieces = re.split(r"(\s+)", text)
        for i in range(0, len(pieces), 2):
            chunk = pieces[i]
            if not chunk:
                continue
            if match := WORD_SHAPE.fullmatch(chunk):
                core = match[2]
                new = word(core.lower())
                if core.isupper() and len(core) > 1:
                    new = new.upper()
                elif core[0].isupper():
                    new = new[:1].upper() + new[1:]
                chunk = match[1] + new + (tag if chunk in self.once else "") + match[3]
            elif chunk in self.once:
                chunk = chunk + tag
            pieces[i] = chunk
        return "".join(pieces)


def _letters(k: int) -> str:
    out = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        out = chr(97 + r) + out
    return out


def distinct_texts(n: int) -> list[str]:
    """n web documents, none repeated: `unique_corpus` where the shared data is, else generated ones."""
    return unique_corpus(n)[1] if all(path.exists() for path, _ in WEB_FILES) else generated_texts(n)


def unique_corpus(n: int) -> tuple[list[str], list[str]]:
    """n documents, none repeated: the real ones (ids `real-NNNNNN`), then rewrites of them in turn
    (`rw-K-of-NNNNNN`, see `Rewriter`); returns (ids, texts)."""
    real = unique_web_texts()
    ids = [f"real-{i:06d}" for i in range(min(n, len(real)))]
    texts = real[: len(ids)]
    rewriter = Rewriter(real) if n > len(real) else None
    seen, j = set(texts), 0
    while len(texts) < n:  # a rewrite of a document with no word to change equals it: skipped
        k, i = divmod(j, len(real))
        j += 1
        if (text := rewriter.rewrite(real[i], k + 1, i)) not in seen:
            seen.add(text)
            ids.append(f"rw-{k + 1}-of-{i:06d}")
            texts.append(text)
    return ids, texts
