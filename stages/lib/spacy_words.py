"""spaCy's English word tokenizer without spaCy: its rules as data, its algorithm in plain Python.

datatrove's Gopher, C4 and FineWeb filters count words with spaCy's English tokenizer, so heuristics
splits words exactly that way to make the decisions theirs. The rules (prefix, suffix, infix and URL
patterns, special cases) are spaCy's own, exported to `spacy_en_rules.json` by running this module
with spaCy installed (`python -m winnow.stages.lib.spacy_words`; spaCy is MIT-licensed, (c) ExplosionAI
GmbH). The algorithm is `spacy.tokenizer.Tokenizer.explain`, spaCy's Python reference of its Cython
tokenizer, followed by its special-case matcher. A whitespace-separated chunk always splits the same
way, so each distinct chunk is split once per process (spaCy caches the same way, but also builds
every text into a `Doc`). It departs from spaCy's Cython tokenizer, as `explain` itself does, only on
odd runs such as five apostrophes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from itertools import chain
from pathlib import Path

RULES = Path(__file__).with_name("spacy_en_rules.json")


class BoundedMemo(dict):
    """`memo[key]` is `compute(key)`, computed on first sight and looked up in C afterwards. When `limit`
    keys are held they become the previous generation, consulted before computing and dropped at the
    next turnover, so memory stays bounded on an endless vocabulary while frequent keys survive."""

    def __init__(self, compute: Callable, limit: int):
        super().__init__()
        self.compute, self.limit, self.previous = compute, limit, {}

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.previous = dict(self)
            self.clear()
        value = self.previous.get(key)
        if value is None:
            value = self.compute(key)
        self[key] = value
        return value


class SpacyWords:
    """`words(text)`: the texts of spaCy's English tokens, whitespace tokens left out (as datatrove
    leaves them out)."""

    def __init__(self, rules: dict):
        def compiled(name):
            return re.compile(rules[name]["pattern"], rules[name]["flags"])

        self.prefix = compiled("prefix").search
        self.suffix = compiled("suffix").search
        self.infix = compiled("infix").finditer
        self.url = compiled("url").match
        self.special: dict[str, list[str]] = rules["special"]
        # special cases that contain affixes are found again after splitting: first token -> patterns
        self.matcher: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for rule in self.special:
            if self.prefix(rule) or self.suffix(rule) or any(self.infix(rule)) or " " in rule:
                pattern = tuple(self._split(rule, specials=False))
                self.matcher.setdefault(pattern[0], []).append((pattern, rule))
        self.chunks = BoundedMemo(self._chunk, 1 << 18)

    def words(self, text: str) -> list[str]:
        return list(chain.from_iterable(map(self.chunks.__getitem__, text.split())))

    def _chunk(self, chunk: str) -> list[str]:
        # no prefix, suffix or infix rule matches ASCII letters alone (tested), so such a chunk is one
        # word unless it is a special case; most of a web text's distinct chunks are that
        if chunk.isascii() and chunk.isalpha() and chunk not in self.special:
            return [chunk]
        return self._match_specials(self._split(chunk, specials=True))

    def _split(self, substring: str, specials: bool) -> list[str]:
        """One whitespace-free chunk, as `Tokenizer.explain` splits it."""
        special = self.special if specials else {}
        tokens: list[str] = []
        suffixes: list[str] = []
        while substring:
            if substring in special:
                tokens += special[substring]
                break
            while self.prefix(substring) or self.suffix(substring):
                if substring in special:
                    tokens += special[substring]
                    substring = ""
                    break
                if match := self.prefix(substring):
                    if match.end() == 0:
                        break
                    tokens.append(substring[:match.end()])
                    substring = substring[match.end():]
                    if substring in special:
                        continue
                if match := self.suffix(substring):
                    if match.start() == len(substring):
                        break
                    suffixes.append(substring[match.start():])
                    substring = substring[:match.start()]
            if not substring:
                continue
            if self.url(substring):
                tokens.append(substring)
            elif substring in special:
                tokens += special[substring]
            elif infixes := list(self.infix(substring)):
                offset = 0
                for match in infixes:
                    if offset == 0 and match.start() == 0:
                        continue
                    if substring[offset:match.start()]:
                        tokens.append(substring[offset:match.start()])
                    if substring[match.start():match.end()]:
                        tokens.append(substring[match.start():match.end()])
                    offset = match.end()
                if substring[offset:]:
                    tokens.append(substring[offset:])
            else:
                tokens.append(substring)
            substring = ""
        return tokens + suffixes[::-1]

    def _match_specials(self, tokens: list[str]) -> list[str]:
        """spaCy's special-case matcher: runs of tokens spelling a special case that has affixes become
        that case's tokens (longest first, then leftmost, never overlapping)."""
        if len(tokens) < 2 or not any(t in self.matcher for t in tokens):
            return tokens
        spans = []
        for start, token in enumerate(tokens):
            for pattern, rule in self.matcher.get(token, ()):
                if tuple(tokens[start:start + len(pattern)]) == pattern:
                    spans.append((start, start + len(pattern), rule))
        taken: set[int] = set()
        chosen = {}
        for start, end, rule in sorted(spans, key=lambda s: (-(s[1] - s[0]), s[0])):
            if not taken.intersection(range(start, end)):
                taken.update(range(start, end))
                chosen[start] = (end, rule)
        out, i = [], 0
        while i < len(tokens):
            if i in chosen:
                end, rule = chosen[i]
                out += self.special[rule]
                i = end
            else:
                out.append(tokens[i])
                i += 1
        return out


@lru_cache(maxsize=1)
def load() -> SpacyWords:
    """The tokenizer of `spacy_en_rules.json`, built once per process (its chunk cache lives with it)."""
    return SpacyWords(json.loads(RULES.read_text()))


def export_rules(path: Path = RULES) -> None:
    """Write spaCy's English tokenizer rules (needs spaCy) to `path`."""
    import spacy
    from spacy.attrs import ORTH

    tokenizer = spacy.blank("en").tokenizer

    def pattern(method):
        return {"pattern": method.__self__.pattern, "flags": int(method.__self__.flags)}

    assert tokenizer.token_match is None, "English has no token_match; this port does not implement one"
    rules = {"spacy": spacy.__version__, "prefix": pattern(tokenizer.prefix_search),
             "suffix": pattern(tokenizer.suffix_search), "infix": pattern(tokenizer.infix_finditer),
             "url": pattern(tokenizer.url_match),
             "special": {chunk: [token[ORTH] for token in tokens] for chunk, tokens in sorted(tokenizer.rules.items())}}
    path.write_text(json.dumps(rules, ensure_ascii=False, indent=0) + "\n")


if __name__ == "__main__":
    export_rules()
