"""Ground truth for near-duplicate removal: edited copies of real documents, exact Jaccard by
brute force, and precision/recall of a removed set. Used by the tests and the benchmark, and by
users tuning `dedup` on their own text."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from winnow.stages.dedup import DedupConfig, Shingler

BOILERPLATE = ("Subscribe to our newsletter for weekly updates. Share this article with your friends. "
               "All rights reserved. Terms of use and privacy policy apply to this website.")
EDITS = ("insert", "delete", "swap", "boilerplate", "truncate")


def edit(text: str, kind: str, rate: float, rng: random.Random) -> str:
    """A copy of `text` with about `rate` of its words changed by one kind of edit."""
    words = text.split(" ")
    k = max(1, round(rate * len(words)))
    if kind == "insert":
        for _ in range(k):
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
    elif kind == "delete":
        for _ in range(min(k, len(words) - 1)):
            words.pop(rng.randrange(len(words)))
    elif kind == "swap":
        for _ in range(k):
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "boilerplate":
        extra = BOILERPLATE.split(" ")
        words = words + (extra * (1 + k // len(extra)))[:k]
    elif kind == "truncate":
        words = words[: len(words) - k]
    return " ".join(words)


def edited_corpus(texts: list[str], copies: int, seed: int = 0, max_rate: float = 0.2,
                  min_words: int = 80, keep_short: bool = False) -> tuple[list[str], list[str]]:
    """The originals plus `copies` edited copies of random ones of at least `min_words` words; returns (ids,
    texts). Shorter texts are left out, or with `keep_short` kept as originals that are not copied."""
    rng = random.Random(seed)
    originals = list(texts) if keep_short else [t for t in texts if len(t.split()) >= min_words]
    sources = [i for i, t in enumerate(originals) if len(t.split()) >= min_words]
    ids = [f"orig-{i:06d}" for i in range(len(originals))]
    out = list(originals)
    for c in range(copies):
        i = rng.choice(sources)
        kind = rng.choice(EDITS)
        out.append(edit(originals[i], kind, rng.uniform(0.005, max_rate), rng))
        ids.append(f"copy-{c:06d}-of-{i:06d}-{kind}")
    return ids, out


def family(doc_id: str) -> str:
    """The original an `edited_corpus` id belongs to: `orig-000007` and `copy-000042-of-000007-...` -> `000007`."""
    return doc_id.split("-of-")[1].split("-")[0] if doc_id.startswith("copy") else doc_id.removeprefix("orig-")


@dataclass
class Truth:
    pairs: set[tuple[int, int]]  # (i, j), i < j, with Jaccard >= threshold
    components: list[set[int]]  # connected components of those pairs (size >= 2)

    def score(self, ids: list[str], removed_ids: set[str]) -> tuple[float, float]:
        """(precision, recall), whichever member a method keeps.

        precision: removed documents that truly have a near-duplicate (Jaccard >= threshold);
        recall: removals found, at most size - 1 per true component, over the sum of size - 1.
        """
        index = {doc_id: i for i, doc_id in enumerate(ids)}
        removed = {index[r] for r in removed_ids if r in index}
        has_partner = {i for pair in self.pairs for i in pair}
        precision = len(removed & has_partner) / len(removed) if removed else 1.0
        expected = sum(len(c) - 1 for c in self.components)
        found = sum(min(len(removed & c), len(c) - 1) for c in self.components)
        return precision, found / expected if expected else 1.0


def brute_force_truth(ids: list[str], texts: list[str], cfg: DedupConfig) -> Truth:
    """Exact Jaccard of every pair's shingle sets (sparse doc x shingle product), then components."""
    hashes, starts = Shingler(cfg).shingle_hashes(texts)
    rows = np.repeat(np.arange(len(texts)), np.diff(starts))
    _, cols = np.unique(hashes, return_inverse=True)
    matrix = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols.ravel())))
    matrix.data[:] = 1  # a shingle repeated in one document counts once
    matrix.sum_duplicates()
    matrix.data[:] = 1
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    inter = (matrix @ matrix.T).tocoo()
    i, j, n = inter.row, inter.col, inter.data
    keep = i < j
    i, j, n = i[keep], j[keep], n[keep]
    jaccard = n / (sizes[i] + sizes[j] - n)
    hit = jaccard >= cfg.threshold
    pairs = set(zip(i[hit].tolist(), j[hit].tolist(), strict=True))
    graph = sp.coo_matrix((np.ones(int(hit.sum())), (i[hit], j[hit])), shape=(len(texts), len(texts)))
    _, labels = sp.csgraph.connected_components(graph, directed=False)
    groups: dict[int, set[int]] = {}
    for node in {x for pair in pairs for x in pair}:
        groups.setdefault(int(labels[node]), set()).add(node)
    return Truth(pairs, list(groups.values()))
