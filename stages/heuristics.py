"""Heuristic quality filters: Gopher quality, Gopher repetition, C4 and FineWeb rules.

Each rule is named `<ruleset>.<rule>` (the name written to `reject_reason`), has its published
default threshold and can be switched off (threshold `null`, or the ruleset's `enabled: false`).
Rulesets run in the order of FineWeb's pipeline: Gopher repetition, Gopher quality, C4 (which
drops lines from the text it keeps), FineWeb; the first rule that fires decides.

The rules follow the definitions of datatrove's filters, and words are split as spaCy's English
tokenizer splits them (datatrove's word tokenizer; `spacy_words` runs its rules without spaCy), so
decisions are datatrove's; or, with `words: whitespace`, at whitespace, as NeMo Curator's filters do.
Repeated n-grams are found by hashing integer word ids with numpy. See README "Heuristics" for the
deliberate differences.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
import regex
from pydantic import Field

from winnow.schemas.config import Fraction, StageConfig, StrictModel
from winnow.stages.base import DocumentStage, StageResult
from winnow.stages.lib.spacy_words import BoundedMemo
from winnow.stages.lib.spacy_words import load as spacy_words

PARAGRAPH_RE = re.compile(r"\n{2,}")
LINES_RE = re.compile(r"\n+")
CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
TERMINAL_PUNCTUATION_RE = regex.compile(r"\p{Sentence_Terminal}")  # Unicode's sentence terminators
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


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


class HeuristicsConfig(StageConfig):
    name: Literal["heuristics"] = "heuristics"
    words: Literal["spacy", "whitespace"] = Field(
        "spacy", description="how the rules split words: spaCy's English tokens, as datatrove's filters do (so "
                             "decisions are theirs), or whitespace, as NeMo Curator's do (about twice as fast)")
    gopher_quality: GopherQualityRules = GopherQualityRules()
    gopher_repetition: GopherRepetitionRules = GopherRepetitionRules()
    c4: C4Rules = C4Rules()
    fineweb: FineWebRules = FineWebRules()


@lru_cache(maxsize=65536)
def _is_symbol_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSC"


@lru_cache(maxsize=1 << 18)
def is_symbol_word(word: str) -> bool:
    """A token made only of punctuation, symbols or control characters."""
    return all(_is_symbol_char(ch) for ch in word)


SYMBOL, LETTER = 1, 2
# The characters Gopher's quality rules do not count as a word on their own: datatrove's list (its
# `utils.text.PUNCTUATION_SET`, Apache-2.0), so word counts are its counts (Unicode's punctuation categories
# would also drop "·" or "©", which it counts as words)
GOPHER_PUNCTUATION = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
    # and its sentence terminators
    + "\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a"
    "\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945"
    "\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d"
    "\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf"
    "\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff61\U00010a56"
    "\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88"
    "\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142"
    "\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b"
    "\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb"
    "\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4"
    "\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944"
    "\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8"
    "\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98"
    "\U0001bc9f\U0001da88")


def word_facts(word: str) -> int:
    """SYMBOL | LETTER bits of a word: made only of Gopher's punctuation; has a letter."""
    return SYMBOL * all(ch in GOPHER_PUNCTUATION for ch in word) | LETTER * any(ch.isalpha() for ch in word)


FACTS = BoundedMemo(word_facts, 1 << 18)  # looked up in C: map(FACTS.__getitem__, words)


@lru_cache(maxsize=4096)
def _is_terminal(token: str) -> bool:
    return TERMINAL_PUNCTUATION_RE.fullmatch(token) is not None


def split_words(text: str) -> list[str]:
    """Words as datatrove's filters see them: spaCy's English tokens (see `spacy_words`)."""
    return spacy_words().words(text)


class Doc:
    """A text and the views of it rules share, each computed at most once.

    Per-word facts (length, symbol-only, has a letter) are computed once per distinct word and
    weighted by its count, since web text repeats its words many times."""

    __slots__ = ("text", "split", "_words", "_vocab", "_ids", "_counts", "_lengths", "_cum_len", "_hashes")

    def __init__(self, text: str, words: list[str] | None = None, split: Callable[[str], list[str]] = split_words):
        self.text = text
        self.split = split  # text -> words
        self._words = words
        self._vocab: list[str] | None = None
        self._ids: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._cum_len: np.ndarray | None = None
        self._hashes: dict[int, np.ndarray] = {}

    @property
    def words(self) -> list[str]:
        """The text's words; they are split within whitespace-separated chunks, so the words of its lines
        (`str.splitlines`) joined are these."""
        if self._words is None:
            self._words = self.split(self.text)
        return self._words

    def _index(self) -> None:
        vocab = self._vocab = list(dict.fromkeys(self.words))  # distinct words in order of first occurrence
        index = {word: i for i, word in enumerate(vocab)}
        ids = np.fromiter(map(index.__getitem__, self.words), dtype=np.int64, count=len(self.words))
        self._ids = ids.astype(np.uint64) + np.uint64(1)
        self._counts = np.bincount(ids, minlength=len(vocab))
        self._lengths = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
        self._cum_len = np.concatenate([[0], np.cumsum(self._lengths[ids])]).astype(np.int64)

    @property
    def vocab(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The distinct words in order of first occurrence, how often each occurs, and its length."""
        if self._vocab is None:
            self._index()
        return self._vocab, self._counts, self._lengths

    def ngram_hashes(self, n: int) -> np.ndarray:
        """64-bit hash of every word n-gram (position i covers words i..i+n-1)."""
        if n not in self._hashes:
            if self._ids is None:
                self._index()
            if n == 1:
                self._hashes[1] = self._ids
            else:  # extend the (n-1)-gram hashes by one word
                shorter = self.ngram_hashes(n - 1)
                self._hashes[n] = shorter[:-1] * _HASH_MULT + self._ids[n - 1:] if shorter.size else shorter
        return self._hashes[n]

    def ngram_chars(self, n: int) -> np.ndarray:
        """Characters of each n-gram's words (without separators)."""
        if self._cum_len is None:
            self._index()
        return self._cum_len[n:] - self._cum_len[: len(self._cum_len) - n]


Verdict = tuple[str, str] | None  # (rule, detail) when the document is dropped
Rule = Callable[[Doc], Verdict]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """Repeated elements (after their first occurrence) and their total characters."""
    seen: set[str] = set()
    n_dup = chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            chars += len(item)
        else:
            seen.add(item)
    return n_dup, chars


def _over(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def _under(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit


def gopher_quality(cfg: GopherQualityRules) -> Rule:
    stop_words = frozenset(cfg.stop_words)

    def check(doc: Doc) -> Verdict:
        text, n_words = doc.text, len(doc.words)
        vocab, counts, lengths = doc.vocab
        facts = np.fromiter(map(FACTS.__getitem__, vocab), dtype=np.uint8, count=len(vocab))
        content = counts * ((facts & SYMBOL) == 0)
        n = int(content.sum())
        if cfg.min_doc_words and n < cfg.min_doc_words:
            return "min_doc_words", f"{n} words < {cfg.min_doc_words}"
        if cfg.max_doc_words and n > cfg.max_doc_words:
            return "max_doc_words", f"{n} words > {cfg.max_doc_words}"
        if n == 0:
            return "min_doc_words", "no words"
        avg = int(content @ lengths) / n
        if cfg.min_avg_word_length and avg < cfg.min_avg_word_length:
            return "min_avg_word_length", f"{avg:.2f} < {cfg.min_avg_word_length}"
        if cfg.max_avg_word_length and avg > cfg.max_avg_word_length:
            return "max_avg_word_length", f"{avg:.2f} > {cfg.max_avg_word_length}"
        if cfg.max_symbol_word_ratio:
            if (r := text.count("#") / n_words) > cfg.max_symbol_word_ratio:
                return "hash_ratio", f"{r:.3f} > {cfg.max_symbol_word_ratio}"
            if (r := (text.count("...") + text.count("…")) / n_words) > cfg.max_symbol_word_ratio:
                return "ellipsis_ratio", f"{r:.3f} > {cfg.max_symbol_word_ratio}"
        lines = text.splitlines() or [""]
        if cfg.max_bullet_lines_ratio:
            r = sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines)
            if r > cfg.max_bullet_lines_ratio:
                return "bullet_lines_ratio", f"{r:.3f} > {cfg.max_bullet_lines_ratio}"
        if cfg.max_ellipsis_lines_ratio:
            r = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
            if r > cfg.max_ellipsis_lines_ratio:
                return "ellipsis_lines_ratio", f"{r:.3f} > {cfg.max_ellipsis_lines_ratio}"
        if cfg.max_non_alpha_words_ratio:
            r = int(counts[(facts & LETTER) != 0].sum()) / n_words
            if r < cfg.max_non_alpha_words_ratio:
                return "alpha_words_ratio", f"{r:.3f} < {cfg.max_non_alpha_words_ratio}"
        if cfg.min_stop_words and (k := len(stop_words.intersection(vocab))) < cfg.min_stop_words:
            return "min_stop_words", f"{k} distinct stop words < {cfg.min_stop_words}"
        return None

    return check


def gopher_repetition(cfg: GopherRepetitionRules) -> Rule:
    def check(doc: Doc) -> Verdict:
        text = doc.text
        if not text:
            return "empty", "empty text"
        size = len(text)
        paragraphs = PARAGRAPH_RE.split(text.strip())
        n_dup, chars = _duplicates(paragraphs)
        if _over(r := n_dup / len(paragraphs), cfg.dup_para_frac):
            return "dup_para_frac", f"{r:.3f} > {cfg.dup_para_frac}"
        if _over(r := chars / size, cfg.dup_para_char_frac):
            return "dup_para_char_frac", f"{r:.3f} > {cfg.dup_para_char_frac}"
        lines = LINES_RE.split(text)
        n_dup, chars = _duplicates(lines)
        if _over(r := n_dup / len(lines), cfg.dup_line_frac):
            return "dup_line_frac", f"{r:.3f} > {cfg.dup_line_frac}"
        if _over(r := chars / size, cfg.dup_line_char_frac):
            return "dup_line_char_frac", f"{r:.3f} > {cfg.dup_line_char_frac}"
        for n, limit in sorted(cfg.top_n_grams.items()):
            hashes = doc.ngram_hashes(n)
            if hashes.size == 0:
                continue
            # Most frequent n-gram (ties: the first to occur), counted with its separators.
            _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
            best = np.flatnonzero(counts == counts.max())
            top = best[np.argmin(first[best])]
            top_chars = (doc.ngram_chars(n)[first[top]] + n - 1) * counts[top]
            if _over(r := top_chars / size, limit):
                return f"top_{n}_gram", f"{r:.3f} > {limit}"
        no_repeats_from = None  # no n-gram repeats => no longer one does either
        for n, limit in sorted(cfg.dup_n_grams.items()):
            if no_repeats_from is not None and n > no_repeats_from:
                continue
            repeated = _repeated_ngram_chars(doc, n)
            if repeated == 0:
                no_repeats_from = n
            if _over(r := repeated / size, limit):
                return f"dup_{n}_gram", f"{r:.3f} > {limit}"
        return None

    return check


def _repeated_ngram_chars(doc: Doc, n: int) -> int:
    """Characters in repeated n-grams, scanning left to right and skipping past each repeat.

    Only positions whose n-gram occurs more than once can be a repeat, so the scan visits just
    those, jumping over the ones a repeat skips past."""
    hashes = doc.ngram_hashes(n)
    if hashes.size == 0:
        return 0
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    positions = np.flatnonzero(counts[inverse] > 1)
    if positions.size == 0:
        return 0
    chars = doc.ngram_chars(n)[positions].tolist()
    keys = inverse[positions].tolist()
    positions = positions.tolist()
    seen: set[int] = set()
    repeated, j, resume = 0, 0, 0  # positions before `resume` were skipped past
    while j < len(positions):
        if positions[j] < resume:
            j = bisect_left(positions, resume, j)
            continue
        if keys[j] in seen:
            repeated += chars[j]
            resume = positions[j] + n
        else:
            seen.add(keys[j])
        j += 1
    return repeated


def _count_sentences(tokens: list[str], whitespace_words: bool = False) -> int:
    """Sentences in a line's words as spaCy's sentencizer splits them: a new sentence starts at the
    first non-punctuation token after a sentence-terminal token (abbreviations like "Dr." are one token).
    Whitespace words carry their punctuation: one ending in a terminal mark ends a sentence."""
    sentences, seen_end = 1, False
    for token in tokens:
        if _is_terminal(token[-1] if whitespace_words else token):
            seen_end = True
        elif seen_end and not is_symbol_word(token):
            sentences += 1
            seen_end = False
    return sentences


def c4(cfg: C4Rules, whitespace_words: bool = False) -> Callable[[Doc], tuple[Verdict, Doc]]:
    """C4's line filters, then its document rules; returns the verdict and the cleaned document (its
    kept lines, with their words: the later rules need not split them again)."""

    def check(doc: Doc) -> tuple[Verdict, Doc]:
        sentences, kept, kept_words = 0, [], []
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if cfg.max_word_length and len(line) > cfg.max_word_length and max(map(len, words)) > cfg.max_word_length:
                continue
            if cfg.remove_citations and "[" in line:
                line = CITATION_RE.sub("", line)
            if cfg.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
                continue
            if cfg.min_words_per_line and len(words) < cfg.min_words_per_line:
                continue
            lower = line.lower()
            if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
                return ("lorem_ipsum", "contains 'lorem ipsum'"), doc
            if cfg.filter_javascript and "javascript" in lower:
                continue
            if cfg.filter_curly_bracket and "{" in line:
                return ("curly_bracket", "contains '{'"), doc
            if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
                continue
            tokens = doc.split(line)  # only kept lines are split into words
            if cfg.min_num_sentences:
                sentences += _count_sentences(tokens, whitespace_words)
            kept.append(line)
            kept_words += tokens
        if cfg.min_num_sentences and sentences < cfg.min_num_sentences:
            return ("min_num_sentences", f"{sentences} sentences in kept lines < {cfg.min_num_sentences}"), doc
        cleaned = "\n".join(kept).strip()
        return None, doc if cleaned == doc.text else Doc(cleaned, kept_words, doc.split)

    return check


def fineweb(cfg: FineWebRules) -> Rule:
    def check(doc: Doc) -> Verdict:
        text = doc.text
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty", "no non-empty lines"
        if cfg.line_punct_thr is not None:
            r = sum(bool(TERMINAL_PUNCTUATION_RE.match(line[-1])) for line in lines) / len(lines)
            if r < cfg.line_punct_thr and not (r == 0 and cfg.line_punct_exclude_zero):
                return "line_punct_ratio", f"{r:.3f} < {cfg.line_punct_thr}"
        if _over(r := sum(len(line) <= cfg.short_line_length for line in lines) / len(lines), cfg.short_line_thr):
            return "short_line_ratio", f"{r:.3f} > {cfg.short_line_thr}"
        if cfg.char_duplicates_ratio is not None:
            r = _duplicates(lines)[1] / max(len(text) - text.count("\n"), 1)
            if r > cfg.char_duplicates_ratio:
                return "char_dup_ratio", f"{r:.3f} > {cfg.char_duplicates_ratio}"
        if cfg.new_line_ratio is not None:
            newlines = text.count("\n")
            # each whitespace-separated chunk is one word or more, so the ratio over chunks bounds the
            # ratio over words from above: words are split only when that bound exceeds the limit
            if doc._words is not None or newlines / max(len(text.split()), 1) > cfg.new_line_ratio:
                r = newlines / max(len(doc.words), 1)
                if r > cfg.new_line_ratio:
                    return "list_ratio", f"{r:.3f} > {cfg.new_line_ratio}"
        return None

    return check


RULESETS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


class Evaluator:
    """All enabled rulesets, in order; `evaluate(text)` -> (reason, detail, text to keep)."""

    def __init__(self, cfg: HeuristicsConfig, only: str | None = None):
        self.c4_cfg = cfg.c4
        whitespace = cfg.words == "whitespace"
        self.split = str.split if whitespace else split_words
        self.rulesets: list[tuple[str, Callable]] = []
        for name in RULESETS if only is None else (only,):
            rules = getattr(cfg, name)
            if rules.enabled:
                check = c4(rules, whitespace) if name == "c4" else {
                    "gopher_quality": gopher_quality, "gopher_repetition": gopher_repetition, "fineweb": fineweb,
                }[name](rules)
                self.rulesets.append((name, check))

    def evaluate(self, text: str) -> tuple[str | None, str | None, str]:
        doc = Doc(text, split=self.split)
        for name, check in self.rulesets:
            if name == "c4":
                verdict, cleaned = check(doc)
                if verdict is None and self.c4_cfg.clean_lines:
                    doc = cleaned
            else:
                verdict = check(doc)
            if verdict is not None:
                return f"{name}.{verdict[0]}", verdict[1], text
        return None, None, doc.text


class Heuristics(DocumentStage):
    Config = HeuristicsConfig

    def __init__(self, config: HeuristicsConfig, run=None):
        super().__init__(config, run)
        self.evaluator = Evaluator(config)

    def apply(self, table: pa.Table) -> StageResult:
        keep, texts, drop, reasons, details = [], [], [], [], []
        for i, text in enumerate(table.column("text").to_pylist()):
            reason, detail, new_text = self.evaluator.evaluate(text)
            if reason is None:
                keep.append(i)
                texts.append(new_text)
            else:
                drop.append(i)
                reasons.append(reason)
                details.append(detail)
        kept = table.take(pa.array(keep, pa.int64()))
        text_index = kept.schema.get_field_index("text")
        kept = kept.set_column(text_index, table.schema.field("text"), pa.array(texts, pa.string()))
        return StageResult.of(self.name, table.num_rows, kept, table.take(pa.array(drop, pa.int64())), reasons, details)

