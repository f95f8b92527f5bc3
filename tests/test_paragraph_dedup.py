"""paragraph_dedup: hand-worked cases, then planted boilerplate in real web text found again."""

from __future__ import annotations

import gzip
import json
import random
import re

import pyarrow as pa

from conftest import data_path, documents
from winnow.stages.base import ShardContext
from winnow.stages.paragraph_dedup import SEPARATORS, ParagraphDedup, ParagraphDedupConfig, _reduce_task

P1 = "Cookies help us deliver our services. By using our services, you agree to our use of cookies and our terms."
P2 = "Subscribe to our newsletter for the latest stories, offers and events delivered straight to your inbox today."
WORDS = " ".join(f"word{i}" for i in range(30))


def run_local(stage: ParagraphDedup, shards: list[pa.Table]):
    """The stage's map -> reduce -> apply in this process (what the runtime does on Ray, one partition)."""
    parts, figures = [], []
    for i, table in enumerate(shards):
        mapper = stage.mapper(ShardContext(index=i, partitions=1))
        mapper.add(table)
        *split, figure = mapper.finish()
        parts.append(split[0])
        figures.append(figure)
    *decisions, reduced = _reduce_task(0, stage, len(shards), 1, *parts)
    results = [next(stage.process_tables([t], ShardContext(decisions=decisions[i]))) for i, t in enumerate(shards)]
    return results, {**reduced, "units_seen": sum(f["units_seen"] for f in figures)}


def test_first_occurrence_stays_later_ones_are_cut_and_short_units_never_are():
    stage = ParagraphDedup(ParagraphDedupConfig(min_words=5))
    a = documents([f"{WORDS}\n\n{P1}\n\nRead more", f"{P2}\n\n{WORDS} again\n\n{P2}"], ["a1", "a2"])
    b = documents([f"Intro {WORDS}\n\n{P1}\n\nRead more\n\nEnd {WORDS}"], ["b1"])
    (ra, rb), figures = run_local(stage, [a, b])
    texts = dict(zip(ra.kept["id"].to_pylist() + rb.kept["id"].to_pylist(),
                     ra.kept["text"].to_pylist() + rb.kept["text"].to_pylist(), strict=True))
    assert texts["a1"] == f"{WORDS}\n\n{P1}\n\nRead more"  # first occurrences: untouched
    assert texts["a2"] == f"{P2}\n\n{WORDS} again"  # the repeat inside one document goes (with its separator)
    assert texts["b1"] == f"Intro {WORDS}\n\nRead more\n\nEnd {WORDS}"  # "Read more" is short: never removed
    assert rb.kept["dup_units_removed"].to_pylist() == [1] and rb.kept["dup_chars_removed"].to_pylist() == [
        len(P1) + 2]
    assert rb.kept["dup_removed"].to_pylist() == [[{"at": len(f"Intro {WORDS}\n\n"), "text": P1 + "\n\n"}]]
    assert ra.kept["dup_units_removed"].to_pylist() == [0, 1]
    assert figures["units_seen"] == 10 and figures["units_removed"] == 2 and figures["units_distinct"] == 6


def test_document_rules_mostly_duplicate_and_too_short():
    stage = ParagraphDedup(ParagraphDedupConfig(max_removed_fraction=0.7, min_words=10))
    first = documents([f"{P1}\n\n{P2}\n\n{WORDS}"], ["first"])
    tail = "extraordinarily lengthy vocabulary demonstrates insufficient remaining wordcount here"  # 8 words
    later = documents([f"{P1}\n\n{P2}\n\nshort tail", f"{P1}\n\n{tail}", f"{P2}\n\n{WORDS} fine"],
                      ["mostly", "short", "fine"])
    (_, r), _ = run_local(stage, [first, later])
    reasons = dict(zip(r.rejects["id"].to_pylist(), r.rejects["reject_reason"].to_pylist(), strict=True))
    assert reasons == {"mostly": "mostly_duplicate", "short": "too_short_after_dedup"}
    assert r.rejects["text"].to_pylist()[0].startswith(P1)  # a rejected document keeps its text whole
    assert r.kept["id"].to_pylist() == ["fine"] and r.kept["text"].to_pylist() == [f"{WORDS} fine"]
    assert r.rows_in == 3 == r.kept.num_rows + r.rejects.num_rows


def test_lines_crlf_and_trailing_whitespace():
    by_line = ParagraphDedup(ParagraphDedupConfig(unit="line", min_words=0))
    (r,), _ = run_local(by_line, [documents([f"{P1}\n{WORDS}", f"{WORDS} two\r\n{P1}  \r\nend"], ["x", "y"])])
    assert r.kept["text"].to_pylist() == [f"{P1}\n{WORDS}", f"{WORDS} two\r\nend"]
    by_paragraph = ParagraphDedup(ParagraphDedupConfig(min_words=0))
    (r,), _ = run_local(by_paragraph, [documents([f"{P1}\n{WORDS}", f"{WORDS}\r\n\r\n{P1}\n{WORDS} \r\n \n x"],
                                                 ["x", "y"])])
    assert r.kept["text"].to_pylist() == [f"{P1}\n{WORDS}", f"{WORDS}\r\n\r\n x"]  # CRLF blank line, trailing blanks
    exact = ParagraphDedup(ParagraphDedupConfig(unit="line", normalize="none", min_words=0))
    (r,), _ = run_local(exact, [documents([P1, f"{P1}  \nend"], ["x", "y"])])
    assert r.kept["dup_units_removed"].to_pylist() == [0, 0]  # normalize none: trailing blanks make it another line


def web_pages() -> list[tuple[str, str, str]]:
    """(id, text, unit) of real pages: C4 (paragraphs on single lines) and Dolma's CC and Paloma's samples."""
    pages = []
    for name, unit in [("web/c4_sample.jsonl.gz", "line"), ("web/paloma_c4_100_domains_theguardian.jsonl.gz", "line"),
                       ("web/dolma_cc_main_2019-30_first300.jsonl.gz", "paragraph")]:
        with gzip.open(data_path(name), "rt") as f:
            pages += [(f"{name}:{i}", json.loads(line)["text"], unit) for i, line in enumerate(f) if line.strip()]
    return pages


def reference_removals(texts: list[str], order: list[int], unit: str) -> dict[int, list[str]]:
    """What must go, worked out one document at a time in input order: every unit of 100+ characters
    (whitespace-normalised) seen before, by document."""
    seen, removals = set(), {}
    for doc in order:
        for part in re.split(SEPARATORS[unit], texts[doc]):
            key = " ".join(part.split())
            if len(key) >= 100 and key in seen:
                removals.setdefault(doc, []).append(key)
            seen.add(key)
    return removals


def test_planted_boilerplate_in_real_pages_is_found_with_precision_and_recall_above_0_99():
    rng = random.Random(5)
    planted = [f"{t} Read our privacy policy and terms of service for details on how we collect and use your data. {k}"
               for k, t in enumerate(["Newsletter:", "Cookie notice:", "Related posts:", "Disclaimer:"])]
    for unit in ("line", "paragraph"):
        texts, carriers = [t for _, t, u in web_pages() if u == unit], []
        separator = "\n" if unit == "line" else "\n\n"
        for doc in range(len(texts)):
            if rng.random() < 0.3:
                parts = texts[doc].split(separator)
                parts.insert(rng.randrange(len(parts) + 1), rng.choice(planted))
                texts[doc] = separator.join(parts)
                carriers.append(doc)
        shards = [documents(texts[k::3], [str(d) for d in range(len(texts))][k::3]) for k in range(3)]
        order = [d for k in range(3) for d in range(k, len(texts), 3)]  # input order: shard, then row
        truth = {d for d in carriers if d != min((c for c in carriers if planted_in(texts[c], planted) ==
                                                   planted_in(texts[d], planted)), key=order.index)}
        results, _ = run_local(ParagraphDedup(ParagraphDedupConfig(unit=unit, min_words=0, max_removed_fraction=1)),
                               shards)
        found = {int(doc_id): sorted(" ".join(cut["text"].split()) for cut in removed)
                 for result in results
                 for doc_id, removed in zip(result.kept["id"].to_pylist(), result.kept["dup_removed"].to_pylist(),
                                            strict=True) if removed}
        assert found == {d: sorted(r) for d, r in reference_removals(texts, order, unit).items()}
        found_planted = {d for d, cuts in found.items() if any(c in planted for c in cuts)}
        precision = len(found_planted & truth) / len(found_planted)
        recall = len(found_planted & truth) / len(truth)
        assert len(truth) > 50 and precision >= 0.99 and recall >= 0.99, (unit, precision, recall, len(truth))


def planted_in(text: str, planted: list[str]) -> str:
    return next(p for p in planted if p in text)
