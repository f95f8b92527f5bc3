"""Packing invariants (property-based) and the Megatron .bin/.idx round trip."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from winnow.stages.lib.packing import bfd, concat, decompose
from winnow.storage.megatron import MegatronWriter, read_index, read_sequences

lengths_strategy = st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60)
seq_len_strategy = st.sampled_from([8, 16, 64, 128])


def covered(sequences, lengths):
    """Every document's tokens covered exactly once, by pieces in order."""
    pieces = sorted(p for seq in sequences for p in seq)
    by_doc = {}
    for doc, start, end in pieces:
        assert end > start
        by_doc.setdefault(doc, []).append((start, end))
    for doc, n in enumerate(lengths):
        spans = by_doc.get(doc, [])
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(lengths_strategy, seq_len_strategy, st.integers(0, 5))
def test_concat_loses_nothing_and_fills_every_sequence_but_the_last(lengths, seq_len, seed):
    sequences = concat(lengths, seq_len, seed)
    covered(sequences, lengths)
    sizes = [sum(e - s for _, s, e in seq) for seq in sequences]
    assert all(size == seq_len for size in sizes[:-1]) and 0 < sizes[-1] <= seq_len
    assert concat(lengths, seq_len, seed) == sequences  # deterministic for a seed


@settings(max_examples=200, deadline=None)
@given(lengths_strategy, seq_len_strategy)
def test_bfd_loses_nothing_and_never_overfills(lengths, seq_len):
    bins = bfd(lengths, seq_len)
    covered(bins, lengths)
    assert all(sum(e - s for _, s, e in b) <= seq_len for b in bins)
    # documents are only cut at multiples of seq_len (never more pieces than their length needs)
    pieces = {}
    for b in bins:
        for doc, s, _ in b:
            pieces.setdefault(doc, []).append(s)
    assert all(len(starts) == -(-lengths[d] // seq_len) for d, starts in pieces.items())


@settings(max_examples=200, deadline=None)
@given(lengths_strategy, st.integers(1, 4), st.integers(4, 8))
def test_decompose_buckets_hold_single_document_power_of_two_sequences(lengths, min_log2, max_log2):
    buckets = decompose(lengths, min_log2, max_log2, piece="tokens", overflow="longest")
    kept = 0
    for k, sequences in buckets.items():
        assert min_log2 <= k <= max_log2
        for seq in sequences:
            assert len(seq) == 1 and seq[0][2] - seq[0][1] == 1 << k
            kept += 1 << k
    dropped = sum(n % (1 << min_log2) for n in lengths)  # only the tail below 2^min_log2 is dropped
    assert kept == sum(lengths) - dropped


def test_decomposition_matches_the_reference_piece_convention():
    """Item 6 of issue 13, hand-worked as apple/ml-dataset-decomposition's get_binary cuts a document
    of 1000 ids (min_log2 4, max_log2 8): pieces of 2^k + 1 ids, 257 while the rest exceeds 2^8 + 1
    (with overflow 'longest'), then 129, 65, 33; the last 2 ids are dropped."""
    pieces = lambda buckets: sorted(e - s for seqs in buckets.values() for (_, s, e), in seqs)  # noqa: E731
    buckets = decompose([1000], 4, 8, piece="targets", overflow="longest")
    assert pieces(buckets) == [33, 65, 129, 257, 257, 257]
    assert {k: len(v) for k, v in buckets.items()} == {8: 3, 7: 1, 6: 1, 5: 1}
    starts = sorted(s for seqs in buckets.values() for (_, s, _), in seqs)
    assert starts == [0, 257, 514, 771, 900, 965]  # consecutive pieces share no id
    # a document no longer than 2^max + 1 is cut the same way whatever `overflow` says: 300 -> 257 + 33
    assert pieces(decompose([300], 4, 8)) == [33, 257]
    # the named option for winnow's earlier convention: 2^k ids, 1000 = 3 x 256 + 128 + 64 + 32 (+ 8 dropped)
    assert pieces(decompose([1000], 4, 8, piece="tokens", overflow="longest")) == [32, 64, 128, 256, 256, 256]


def test_decomposition_spreads_long_documents_over_buckets_at_random():
    """The reference's default for the part beyond 2^max: k drawn with P(k) ~ 2^-k, so every bucket
    gets about the same number of tokens (1/6 each for buckets 2^8..2^13); seeded."""
    buckets = decompose([2_000_000], 8, 13, seed=3)
    tokens = {k: sum(e - s for (_, s, e), in seqs) for k, seqs in buckets.items()}
    assert set(tokens) == set(range(8, 14))
    for k, n in tokens.items():
        assert all(e - s == (1 << k) + 1 for (_, s, e), in buckets[k])
        assert abs(n / sum(tokens.values()) - 1 / 6) < 0.03, tokens
    assert decompose([2_000_000], 8, 13, seed=3) == buckets and decompose([2_000_000], 8, 13, seed=4) != buckets


def write_corpus(prefix, n_docs, seed):
    """Random uint16 documents written as a Megatron corpus; returns them."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 60000, rng.integers(1, 500), dtype=np.uint16) for _ in range(n_docs)]
    writer = MegatronWriter(prefix, np.uint16)
    for doc in docs:
        writer.add(doc)
        writer.end_document()
    writer.finish()
    return docs


def test_megatron_round_trip(tmp_path):
    docs = write_corpus(tmp_path / "corpus", 100, seed=0)
    dtype, lengths, pointers, documents = read_index(tmp_path / "corpus")
    assert dtype == np.uint16 and documents.tolist() == list(range(101))
    assert pointers[1] == 2 * lengths[0]
    assert all(np.array_equal(a, b) for a, b in zip(read_sequences(tmp_path / "corpus"), docs, strict=True))


def test_megatron_core_reads_what_winnow_writes(tmp_path):
    """megatron-core's own IndexedDataset reads winnow's files (when megatron-core imports here)."""
    import pytest

    try:
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except Exception as err:  # noqa: BLE001 - megatron-core is optional (dev extra)
        pytest.skip(f"megatron-core not importable: {err}")
    docs = write_corpus(tmp_path / "corpus", 50, seed=1)
    dataset = IndexedDataset(str(tmp_path / "corpus"), mmap=True)
    assert len(dataset) == 50 and list(dataset.document_indices) == list(range(51))
    assert all(np.array_equal(dataset[i], doc) for i, doc in enumerate(docs))
