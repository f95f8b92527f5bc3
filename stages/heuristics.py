"""Heuristic quality filters: Gopher quality, Gopher repetition, C4 and FineWeb rules.

Each rule is named `<ruleset>.<rule>` (the name written to `reject_reason`), has its published
default threshold and can be switched off (threshold `null`, or the ruleset's `enabled: false`).
Rulesets run in the order of FineWeb's pipeline: Gopher repetition, Gopher quality, C4 (which
drops lines from the text it keeps), FineWeb; the first rule that fires decides.

The rules follow the definitions of datatrove's filters so results agree with theirs; the word
tokenizer is a single regular expression instead of spaCy, and repeated n-grams are found by
hashing integer word ids with numpy. See README "Heuristics" for the deliberate differences.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
import regex
from pydantic import Field

from winnow.schemas.config import Fraction, StageConfig, StrictModel
from winnow.stages.base import DocumentStage, StageResult

# Words, split the way spaCy's English tokenizer (which datatrove uses) splits them: URLs whole,
# dotted abbreviations whole (U.S., Dr.), contractions split (do|n't, it|'s, can|not), numbers and
# words with inner periods/commas/slashes/apostrophes whole (3.5, 1,000, and/or, O'Brien), runs of dots or dashes,
# and any other non-space character as its own token.
_CONTRACTION = r"['’](?:s|re|ve|ll|m|d)\b"
WORD_RE = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|(?:[A-Za-z]\.){2,}|(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Inc|Ltd|Co|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct"
    r"|Nov|Dec)\.(?=\s|$)"
    r"|\w+?(?=n['’]t\b)|n['’]t\b|(?<=\w)" + _CONTRACTION + r"|(?i:can)(?=not\b)"
    r"|\w+(?:[.,/]\w+|['’](?!(?:s|re|ve|ll|m|d)\b)\w+)*"
    r"|\.{2,}|-{2,}|[^\w\s]"
)
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
    gopher_quality: GopherQualityRules = GopherQualityRules()
    gopher_repetition: GopherRepetitionRules = GopherRepetitionRules()
    c4: C4Rules = C4Rules()
    fineweb: FineWebRules = FineWebRules()


@lru_cache(maxsize=65536)
def _is_symbol_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSC"


def is_symbol_word(word: str) -> bool:
    """A token made only of punctuation, symbols or control characters."""
    return all(_is_symbol_char(ch) for ch in word)


def split_words(text: str) -> list[str]:
    return WORD_RE.findall(text)


class Doc:
    """A text and the views of it rules share, each computed at most once."""

    __slots__ = ("text", "_words", "_ids", "_cum_len", "_hashes")

    def __init__(self, text: str):
        self.text = text
        self._words: list[str] | None = None
        self._ids: np.ndarray | None = None
        self._cum_len: np.ndarray | None = None
        self._hashes: dict[int, np.ndarray] = {}

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = split_words(self.text)
        return self._words

    def _index(self) -> None:
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(w, len(vocab)) for w in self.words]
        self._ids = np.asarray(ids, dtype=np.uint64) + np.uint64(1)
        self._cum_len = np.concatenate([[0], np.cumsum([len(w) for w in self.words])]).astype(np.int64)

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
        text, words = doc.text, doc.words
        n_words = len(words)
        content = [w for w in words if not is_symbol_word(w)]
        n = len(content)
        if cfg.min_doc_words and n < cfg.min_doc_words:
            return "min_doc_words", f"{n} words < {cfg.min_doc_words}"
        if cfg.max_doc_words and n > cfg.max_doc_words:
            return "max_doc_words", f"{n} words > {cfg.max_doc_words}"
        if n == 0:
            return "min_doc_words", "no words"
        avg = sum(map(len, content)) / n
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
            r = sum(any(c.isalpha() for c in w) for w in words) / n_words
            if r < cfg.max_non_alpha_words_ratio:
                return "alpha_words_ratio", f"{r:.3f} < {cfg.max_non_alpha_words_ratio}"
        if cfg.min_stop_words and (k := len(stop_words.intersection(words))) < cfg.min_stop_words:
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
    """Characters in repeated n-grams, scanning left to right and skipping past each repeat."""
    hashes = doc.ngram_hashes(n)
    if hashes.size == 0 or np.unique(hashes).size == hashes.size:
        return 0
    chars = doc.ngram_chars(n)
    hashes_list = hashes.tolist()
    seen: set[int] = set()
    repeated, i = 0, 0
    while i < len(hashes_list):
        h = hashes_list[i]
        if h in seen:
            repeated += int(chars[i])
            i += n
        else:
            seen.add(h)
            i += 1
    return repeated


def _count_sentences(line: str) -> int:
    """Sentences in a line as spaCy's sentencizer splits them: a new sentence starts at the first
    non-punctuation token after a sentence-terminal token (abbreviations like "Dr." are one token)."""
    sentences, seen_end = 1, False
    for token in split_words(line):
        if TERMINAL_PUNCTUATION_RE.fullmatch(token):
            seen_end = True
        elif seen_end and not is_symbol_word(token):
            sentences += 1
            seen_end = False
    return sentences


def c4(cfg: C4Rules) -> Callable[[Doc], tuple[Verdict, str]]:
    """C4's line filters, then its document rules; returns the verdict and the cleaned text."""

    def check(doc: Doc) -> tuple[Verdict, str]:
        sentences, kept = 0, []
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if cfg.max_word_length and any(len(w) > cfg.max_word_length for w in words):
                continue
            if cfg.remove_citations:
                line = CITATION_RE.sub("", line)
            if cfg.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
                continue
            if cfg.min_words_per_line and len(words) < cfg.min_words_per_line:
                continue
            lower = line.lower()
            if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
                return ("lorem_ipsum", "contains 'lorem ipsum'"), doc.text
            if cfg.filter_javascript and "javascript" in lower:
                continue
            if cfg.filter_curly_bracket and "{" in line:
                return ("curly_bracket", "contains '{'"), doc.text
            if cfg.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
                continue
            if cfg.min_num_sentences:
                sentences += _count_sentences(line)
            kept.append(line)
        if cfg.min_num_sentences and sentences < cfg.min_num_sentences:
            return ("min_num_sentences", f"{sentences} sentences in kept lines < {cfg.min_num_sentences}"), doc.text
        return None, "\n".join(kept).strip()

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
            r = text.count("\n") / max(len(doc.words), 1)
            if r > cfg.new_line_ratio:
                return "list_ratio", f"{r:.3f} > {cfg.new_line_ratio}"
        return None

    return check


RULESETS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


class Evaluator:
    """All enabled rulesets, in order; `evaluate(text)` -> (reason, detail, text to keep)."""

    def __init__(self, cfg: HeuristicsConfig, only: str | None = None):
        self.c4_cfg = cfg.c4
        self.rulesets: list[tuple[str, Callable]] = []
        for name in RULESETS if only is None else (only,):
            rules = getattr(cfg, name)
            if rules.enabled:
                factory = {"gopher_quality": gopher_quality, "gopher_repetition": gopher_repetition,
                           "c4": c4, "fineweb": fineweb}[name]
                self.rulesets.append((name, factory(rules)))

    def evaluate(self, text: str) -> tuple[str | None, str | None, str]:
        doc = Doc(text)
        for name, check in self.rulesets:
            if name == "c4":
                verdict, cleaned = check(doc)
                if verdict is None and self.c4_cfg.clean_lines and cleaned != doc.text:
                    doc = Doc(cleaned)
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

