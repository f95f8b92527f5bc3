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


class _TailSearch:
    """`search` of a suffix pattern (every alternative anchored at the end) that scans only the last
    characters a match can span: the regex engine would otherwise try each of its alternatives at every
    position of the string. Alternatives of unbounded width (`\\.\\.+$`) are searched whole, and only
    on strings ending the way they must end (tested against the whole search)."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern
        branches = _top_level_alternatives(pattern)
        bounded = [width for width, _ in branches if width is not None]
        self.width = max(bounded) if bounded else None
        self.unbounded_ends = tuple(end for width, end in branches if width is None)

    def __call__(self, text: str) -> re.Match | None:
        if self.width is None or None in self.unbounded_ends or text.endswith(self.unbounded_ends):
            return self.pattern.search(text)
        return self.pattern.search(text, max(0, len(text) - self.width))


def _top_level_alternatives(pattern: re.Pattern) -> list[tuple[int | None, str | None]]:
    """(greatest width or None when unbounded, for an unbounded one the literal text it must end with or
    None when unknown) of each top-level alternative of `pattern`."""
    import re._parser as parser  # the stdlib's own regex parser (sre_parse before 3.11)

    parsed = parser.parse(pattern.pattern, pattern.flags)
    if len(parsed.data) == 1 and parsed.data[0][0] is parser.BRANCH:
        alternatives = [parser.SubPattern(parsed.state, alt) for alt in parsed.data[0][1][1]]
    else:
        alternatives = [parsed]
    out = []
    for alt in alternatives:
        width = alt.getwidth()[1]
        if width < parser.MAXREPEAT:
            out.append((width, None))
            continue
        # an unbounded alternative ending in LITERAL... AT_END: the literals it must end with
        items, end = list(alt.data), ""
        if items and items[-1] == (parser.AT, parser.AT_END):
            items.pop()
            while items and items[-1][0] is parser.LITERAL:
                end = chr(items.pop()[1]) + end
            if not end and items and items[-1][0] is parser.MAX_REPEAT:  # x{low,} ends with x * low...
                low, _, body = items.pop()[1]
                if low >= 1 and len(body.data) == 1 and body.data[0][0] is parser.LITERAL:
                    end = chr(body.data[0][1]) * low
                    while items and items[-1] == body.data[0]:  # ...and with the literal x's before it
                        items.pop()
                        end += end[0]
        out.append((None, end or None))
    return out


class SpacyWords:
    """`words(text)`: the texts of spaCy's English tokens, whitespace tokens left out (as datatrove
    leaves them out)."""

    def __init__(self, rules: dict):
        def compiled(name):
            return re.compile(rules[name]["pattern"], rules[name]["flags"])

        self.prefix = compiled("prefix").search
        self.suffix = _TailSearch(compiled("suffix"))
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
        special = self.special
        if chunk.isascii() and chunk.isalpha() and chunk not in special:
            return [chunk]
        # the next most common: letters with one punctuation mark after ("word,") or before ("(word"),
        # split here as `_split` would, without its loop (tested against it on real text)
        if len(chunk) > 1 and chunk not in special:
            core = chunk[:-1]
            if core.isascii() and core.isalpha() and not self.prefix(chunk):
                if (match := self.suffix(chunk)) and match.start() == len(core):
                    return self._match_specials(special.get(core, [core]) + [chunk[-1]])
            core = chunk[1:]
            if core.isascii() and core.isalpha() and (match := self.prefix(chunk)) and match.end() == 1:
                return self._match_specials([chunk[0]] + special.get(core, [core]))
        return self._match_specials(self._split(chunk, specials=True))

    def _split(self, substring: str, specials: bool) -> list[str]:
        """One whitespace-free chunk, as `Tokenizer.explain` splits it (each affix search made once per
        substring: `explain` repeats them)."""
        special = self.special if specials else {}
        tokens: list[str] = []
        suffixes: list[str] = []
        while substring:
            if substring in special:
                tokens += special[substring]
                break
            while (prefix := self.prefix(substring)) or (suffix := self.suffix(substring)):
                if substring in special:
                    tokens += special[substring]
                    substring = ""
                    break
                if prefix:
                    if prefix.end() == 0:
                        break
                    tokens.append(substring[:prefix.end()])
                    substring = substring[prefix.end():]
                    if substring in special:
                        continue
                    suffix = self.suffix(substring)
                if suffix:
                    if suffix.start() == len(substring):
                        break
                    suffixes.append(substring[suffix.start():])
                    substring = substring[:suffix.start()]
            if not substring:
                continue
            if "." in substring and self.url(substring):  # both of its host forms hold a "." (tested)
                tokens.append(substring)
            elif substring in special:
                tokens += special[substring]
            elif substring.isascii() and (substring.isalpha() or substring.isdigit()):
                tokens.append(substring)  # no infix rule splits letters alone or digits alone (tested)
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
        if len(tokens) < 2 or self.matcher.keys().isdisjoint(tokens):
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
